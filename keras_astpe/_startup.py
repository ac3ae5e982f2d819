"""Process start-up: TensorFlow without its noise; XLA:CPU flags; malloc on huge pages.

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

`restart_with_huge_page_malloc` re-executes a training recipe with glibc's malloc on
transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`). XLA:CPU allocates each
step's temporary buffer afresh (184 MB for `ast-pe-small` at batch 8, GBs for the paper
preset) and glibc maps it anew each time: with 4 KiB pages, ~47k page faults per step of
`ast-pe-small` (80 ms of kernel time), and TLB misses on the large tensors. With huge
pages, on a 2-core CPU: JAX 15-17 % faster on `ast-pe-small` and 6-10 % on the paper
preset, TensorFlow 5 %, PyTorch 3 % (bench/README.md). glibc reads its tunables when a
process starts, hence the restart at the top of a recipe's `__main__` (`os.execve`: same
process id, same arguments; ~3.5 s of imports again).
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


HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"


def with_huge_page_malloc(environ):
    """A copy of `environ` with `HUGE_PAGE_MALLOC` in GLIBC_TUNABLES, unless it sets hugetlb."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return dict(environ)
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGE_MALLOC)))}


def _glibc_has_hugetlb():
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return name == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 35)
    except (AttributeError, ValueError, OSError):  # not glibc, or no confstr
        return False


def restart_with_huge_page_malloc():
    """Re-executes this program with `with_huge_page_malloc(os.environ)`, if that differs.

    For a program's start (a recipe's `__main__`), never for a library call: the process
    image is replaced. Does nothing where the C library is not glibc >= 2.35 (the first
    with the tunable), or where GLIBC_TUNABLES already sets `glibc.malloc.hugetlb`.
    """
    if not _glibc_has_hugetlb():
        return
    environ = with_huge_page_malloc(os.environ)
    if environ.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)


def without_jax_xla_cpu_flags(environ):
    """A copy of `environ` whose XLA_FLAGS lacks `JAX_XLA_CPU_FLAGS` (for TensorFlow)."""
    environ = dict(environ)
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if f not in JAX_XLA_CPU_FLAGS]
    if flags:
        environ["XLA_FLAGS"] = " ".join(flags)
    else:
        environ.pop("XLA_FLAGS", None)
    return environ
