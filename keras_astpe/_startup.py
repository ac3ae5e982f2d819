"""Process start-up: TensorFlow without its start-up noise; XLA:CPU flags for JAX.

Importing TensorFlow prints C++ log lines before Python can configure anything: "All log
messages before absl::InitializeLog() is called are written to STDERR", oneDNN and CPU
feature notes, "Could not find cuda drivers", and, on a machine without a GPU, an error
line "failed call to cuInit: ... CUDA error" from the first device query, which reads like
a failure although it is harmless. `import_tensorflow` imports TensorFlow and lists its
devices with the process's stderr pointed at a buffer; if that fails, the buffer is
replayed before the exception, so nothing a user needs is lost. `TF_CPP_MIN_LOG_LEVEL`
defaults to 3: TensorFlow's C++ code also logs notes at the error level while it runs
(e.g. "oneDNN supports DT_BOOL only on platforms with AVX-512"); real failures reach
Python as exceptions. Set it to 0 to see everything.

`use_jax_xla_cpu_flags` chooses XLA:CPU's memory-optimised scheduler for JAX: on a 2-core
CPU the paper preset trains 3-5 % faster with it than with the default, which runs
independent operations concurrently and makes them compete for the cores (bench/README.md).
XLA reads `XLA_FLAGS` when JAX first computes, so training calls it at its start. The
flags are for JAX alone: TensorFlow's own XLA aborts the process on a flag it does not
know, so a TensorFlow child process gets `without_jax_xla_cpu_flags(os.environ)`.
"""

import os
import sys
import tempfile

JAX_XLA_CPU_FLAGS = ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",)


def import_tensorflow():
    """Imports TensorFlow (once), without the log lines its import and device query print."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


def use_jax_xla_cpu_flags(environ=os.environ):
    """Adds `JAX_XLA_CPU_FLAGS` to `environ["XLA_FLAGS"]`, unless it names a scheduler.

    Only with jaxlib >= 0.10 (older ones may not know the flag, and XLA aborts on unknown
    flags); without effect once JAX has computed something in this process.
    """
    try:
        from importlib.metadata import version

        if tuple(int(part) for part in version("jaxlib").split(".")[:2]) < (0, 10):
            return
    except Exception:  # no jaxlib, or a version this cannot read: leave XLA as it is
        return
    flags = environ.get("XLA_FLAGS", "")
    if "--xla_cpu_scheduler_type" not in flags:
        environ["XLA_FLAGS"] = " ".join(filter(None, (flags, *JAX_XLA_CPU_FLAGS)))


def without_jax_xla_cpu_flags(environ):
    """A copy of `environ` whose XLA_FLAGS lacks `JAX_XLA_CPU_FLAGS` (for TensorFlow)."""
    environ = dict(environ)
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if f not in JAX_XLA_CPU_FLAGS]
    if flags:
        environ["XLA_FLAGS"] = " ".join(flags)
    else:
        environ.pop("XLA_FLAGS", None)
    return environ
