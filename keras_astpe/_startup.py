"""Process start-up: TensorFlow without its noise; XLA:CPU and malloc settings for JAX.

Importing TensorFlow prints C++ log lines before Python can configure anything: "All log
messages before absl::InitializeLog() is called are written to STDERR", oneDNN and CPU
feature notes, "Could not find cuda drivers", and, on a machine without a GPU, an error
line "failed call to cuInit: ... CUDA error" from the first device query, which reads like
a failure although it is harmless. `import_tensorflow` imports TensorFlow and lists its
devices with the process's stderr pointed at a buffer; if that fails, the buffer is
replayed before the exception, so nothing a user needs is lost. `tf` is TensorFlow imported
that way on first use, for the modules a model needs: where TensorFlow is not installed,
models still build, train and load on JAX and PyTorch. `hide_gpus_from_tensorflow` keeps
TensorFlow, where it only feeds data, off the GPUs of the JAX and PyTorch backends.
`TF_CPP_MIN_LOG_LEVEL`
defaults to 3: TensorFlow's C++ code also logs notes at the error level while it runs
(e.g. "oneDNN supports DT_BOOL only on platforms with AVX-512"); real failures reach
Python as exceptions. Set it to 0 to see everything.

`use_jax_xla_cpu_flags` chooses XLA:CPU's memory-optimised scheduler for JAX: on a 2-core
CPU the paper preset trains 3-5 % faster with it than with the default, which runs
independent operations concurrently and makes them compete for the cores (bench/README.md).
XLA reads `XLA_FLAGS` when JAX first computes, so training calls it at its start. The
flags are for JAX alone: TensorFlow's own XLA aborts the process on a flag it does not
know, so a TensorFlow child process gets `without_jax_xla_cpu_flags(os.environ)`.

`keep_freed_memory` has glibc's malloc keep freed memory for reuse, for JAX training on
CPUs. XLA:CPU allocates each step's temporary buffer afresh (184 MB for `ast-pe-small` at
batch 8, GBs for the paper preset), from a thread, which glibc serves with a new `mmap`
and returns with `munmap`: every step faulted all its pages in again (~47k page faults,
80 ms of kernel time per step of `ast-pe-small`). With one arena, no `mmap` and no
trimming, the freed block is reused: JAX trains `ast-pe-small` ~12 % and the paper preset
~4 % faster on a 2-core CPU (bench/README.md). The cost: the heap keeps its peak, and a
small allocation that lands in a freed temporary makes the next one grow the heap (RSS of
`ast-pe-small`, batch 8: +0.5 GB over the first 600 steps, flat from there to 2000).
Transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) were faster in a process
alone but 30-40 % slower beside other processes: each step's huge-page faults wait on memory
compaction.
"""

import ctypes
import ctypes.util
import importlib.util
import os
import sys
import tempfile
import warnings

JAX_XLA_CPU_FLAGS = ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",)


def import_tensorflow():
    """Imports TensorFlow (once), without the log lines its import and device query print."""
    if sys.modules.get("tensorflow") is not None:
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


def tensorflow_installed():
    return importlib.util.find_spec("tensorflow") is not None


class _TensorFlowOnUse:
    """`tensorflow`, imported (by `import_tensorflow`) when an attribute is first used.

    The modules a model needs (front end, audio converters, serving) import TensorFlow
    through this, so that models build, train, save and load on JAX or PyTorch where
    TensorFlow is not installed; what runs on TensorFlow ops then says what it needs.
    """

    def __getattr__(self, name):
        if name.startswith("__"):  # hasattr(), copy, pickle, inspect: not TensorFlow's
            raise AttributeError(name)
        try:
            tf = import_tensorflow()
        except ModuleNotFoundError as error:
            if error.name != "tensorflow":
                raise
            raise ModuleNotFoundError(
                f"TensorFlow is not installed (needed for tf.{name}): keras_astpe's audio "
                "front end and serving run on TensorFlow ops; pip install tensorflow",
                name="tensorflow") from None
        value = getattr(tf, name)
        setattr(self, name, value)  # the next use is a plain attribute
        return value


tf = _TensorFlowOnUse()


def hide_gpus_from_tensorflow(backend):
    """On the JAX and PyTorch backends TensorFlow only feeds the model (tf.data, the front
    end): hide the GPUs from it, or the first op it runs maps most of each GPU's memory
    away from the backend that trains. Needs TensorFlow not to have used its devices yet."""
    tf = sys.modules.get("tensorflow")
    if backend == "tensorflow" or tf is None:
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices are already in use: say what it may cost
        if tf.config.list_physical_devices("GPU"):
            warnings.warn(f"TensorFlow used its GPUs before keras_astpe was imported; it may "
                          f"hold GPU memory the {backend} backend needs: import keras_astpe "
                          f"first, or call tf.config.set_visible_devices([], 'GPU')",
                          stacklevel=3)


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


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_MALLOC_ENVIRONMENT = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
                       "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory(environ=os.environ):
    """Sets glibc's malloc to one arena, no `mmap` and no trimming; True if it did.

    Leaves malloc as it is where the C library is not glibc, or where the user tuned it
    (`MALLOC_*`, or `glibc.malloc.*` in GLIBC_TUNABLES). Call it before JAX starts its
    runtime (its first computation or device query): XLA's threads allocate then, each in
    its own arena, and a thread's arena maps every block over 64 MB afresh.
    """
    if (any(name in environ for name in _MALLOC_ENVIRONMENT)
            or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
    return all([mallopt(parameter, value) == 1 for parameter, value in settings])


def jax_is_cpu_only(environ=os.environ):
    """Whether JAX can only run on CPUs here, known without starting its runtime:
    `JAX_PLATFORMS=cpu`, or no GPU or TPU plugin installed."""
    if environ.get("JAX_PLATFORMS"):
        return environ["JAX_PLATFORMS"].strip().lower() == "cpu"
    from importlib.metadata import distributions

    names = {(dist.metadata["Name"] or "").lower().replace("_", "-") for dist in distributions()}
    return not any(name.startswith(("jax-cuda", "jax-rocm", "libtpu")) for name in names)


def configure_jax_process():
    """`use_jax_xla_cpu_flags`, and `keep_freed_memory` where JAX is CPU-only; call it
    before JAX starts its runtime (training, and bench_train's JAX worker)."""
    use_jax_xla_cpu_flags()
    if jax_is_cpu_only():
        keep_freed_memory()


def without_jax_xla_cpu_flags(environ):
    """A copy of `environ` whose XLA_FLAGS lacks `JAX_XLA_CPU_FLAGS` (for TensorFlow)."""
    environ = dict(environ)
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if f not in JAX_XLA_CPU_FLAGS]
    if flags:
        environ["XLA_FLAGS"] = " ".join(flags)
    else:
        environ.pop("XLA_FLAGS", None)
    return environ
