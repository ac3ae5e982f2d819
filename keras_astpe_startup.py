"""The start-up of a process that trains, evaluates or serves with keras_astpe: `configure()`.

    import keras_astpe_startup

    keras_astpe_startup.configure()  # first: before anything imports Keras

    import keras_astpe  # noqa: E402

The recipes, the TFRecord tools and the benchmarks start this way; importing `keras_astpe`
itself leaves the process as it is. This is a module of its own, beside the package and
importing only the standard library, because `import keras_astpe` imports Keras, which on
the TensorFlow backend imports TensorFlow: TensorFlow fixes its log level and prints its
start-up lines at that import, so they can only be set before it.

`configure()` applies, once per process:
- `TF_CPP_MIN_LOG_LEVEL` defaults to 3: TensorFlow's C++ code logs notes at the error level
  while it runs (e.g. "oneDNN supports DT_BOOL only on platforms with AVX-512"); real
  failures reach Python as exceptions. Set it to 0 to see everything.
- TensorFlow, where installed, is imported and lists its devices with the process's stderr
  pointed at a buffer (`import_tensorflow`): its first lines ("All log messages before
  absl::InitializeLog() ...", oneDNN and CUDA notes, and "failed call to cuInit" on a
  machine without a GPU, which reads like a failure but is harmless) come before any log
  level applies. The buffer is replayed if that fails, so nothing a user needs is lost.
- On the JAX and PyTorch backends TensorFlow only feeds the model (tf.data, the front end):
  the GPUs are hidden from it, or its first op maps most of each GPU's memory away from
  the backend that trains (`hide_gpus_from_tensorflow`).
- On JAX, XLA:CPU's memory-optimised scheduler (`use_jax_xla_cpu_flags`) and, where JAX can
  only run on CPUs, glibc malloc that keeps freed memory (`keep_freed_memory`). JAX reads
  both when its runtime starts, after this.
"""

import ctypes
import ctypes.util
import importlib.util
import os
import sys
import tempfile
import warnings

JAX_XLA_CPU_FLAGS = ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",)

_configured = False
_tensorflow_started = False


def configure():
    """Sets up this process for the Keras backend it runs (see the module docstring).

    Call it before anything imports Keras; later calls do nothing.
    """
    global _configured
    if _configured:
        return
    start_tensorflow()
    import keras

    backend = keras.backend.backend()
    hide_gpus_from_tensorflow(backend)
    if backend == "jax":
        use_jax_xla_cpu_flags()
        if jax_is_cpu_only():
            keep_freed_memory()
    _configured = True


def start_tensorflow():
    """The TensorFlow part of `configure()`, for programs that run TensorFlow ops only (the
    TFRecord tools): its log level, and its import where it is installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if tensorflow_installed():
        import_tensorflow()


def tensorflow_installed():
    return importlib.util.find_spec("tensorflow") is not None


def import_tensorflow():
    """TensorFlow, imported and its devices listed with stderr in a buffer (once)."""
    global _tensorflow_started
    if _tensorflow_started:
        return sys.modules["tensorflow"]
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
    _tensorflow_started = True
    return tf


def hide_gpus_from_tensorflow(backend):
    """Hides the GPUs from TensorFlow, if imported, unless it is the Keras `backend`.

    Needs TensorFlow not to have used its devices yet; warns where it has and sees GPUs.
    """
    tf = sys.modules.get("tensorflow")
    if backend == "tensorflow" or tf is None:
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices are already in use: say what it may cost
        if tf.config.list_physical_devices("GPU"):
            warnings.warn(f"TensorFlow used its GPUs before keras_astpe_startup.configure(); "
                          f"it may hold GPU memory the {backend} backend needs: call "
                          f"configure() first, or tf.config.set_visible_devices([], 'GPU')",
                          stacklevel=3)


def use_jax_xla_cpu_flags(environ=os.environ):
    """Adds `JAX_XLA_CPU_FLAGS` to `environ["XLA_FLAGS"]`, unless it names a scheduler.

    XLA:CPU's default scheduler runs independent operations concurrently, and they compete
    for the cores; the memory-optimised one runs them in turn (bench/README.md, "XLA:CPU's
    scheduler"). Only with jaxlib >= 0.10: XLA aborts the process on a flag it does not
    know, which is also why a TensorFlow child process gets `without_jax_xla_cpu_flags`.
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


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_MALLOC_ENVIRONMENT = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
                       "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory(environ=os.environ):
    """Sets glibc's malloc to one arena, no `mmap` and no trimming; True if it did.

    XLA:CPU allocates each step's temporary buffer afresh, from one of its threads; glibc
    serves a block that large in a thread's arena with a new `mmap` and gives it back with
    `munmap`, so every step faults all of its pages in again. With these settings the freed
    block is reused; the heap keeps its peak instead (bench/README.md, "Page faults").
    Leaves malloc as it is where the C library is not glibc, or where the user tuned it
    (`MALLOC_*`, or `glibc.malloc.*` in GLIBC_TUNABLES). Call it before JAX starts its
    runtime (its first computation or device query), when XLA's threads take their arenas.
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
