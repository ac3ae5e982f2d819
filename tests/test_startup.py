import os
import subprocess
import sys

import pytest

from keras_astpe._startup import (
    JAX_XLA_CPU_FLAGS,
    _TensorFlowOnUse,
    jax_is_cpu_only,
    keep_freed_memory,
    use_jax_xla_cpu_flags,
    without_jax_xla_cpu_flags,
)

pytest.importorskip("jax")


def test_jax_xla_cpu_flags_join_the_users_once():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    use_jax_xla_cpu_flags(environ)
    use_jax_xla_cpu_flags(environ)
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                            *JAX_XLA_CPU_FLAGS]
    empty = {}
    use_jax_xla_cpu_flags(empty)
    assert empty["XLA_FLAGS"].split() == list(JAX_XLA_CPU_FLAGS)


def test_a_scheduler_the_user_chose_is_kept():
    chosen = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"
    environ = {"XLA_FLAGS": chosen}
    use_jax_xla_cpu_flags(environ)
    assert environ["XLA_FLAGS"] == chosen


def test_tensorflow_children_get_the_users_flags_only():
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x", "OTHER": "1"}
    use_jax_xla_cpu_flags(environ)
    assert without_jax_xla_cpu_flags(environ) == {"XLA_FLAGS": "--xla_dump_to=/tmp/x",
                                                  "OTHER": "1"}
    only_ours = {}
    use_jax_xla_cpu_flags(only_ours)
    assert without_jax_xla_cpu_flags(only_ours) == {}


@pytest.mark.backend_agnostic
def test_installed_jaxlib_accepts_the_flags():
    # XLA aborts the process on a flag it does not know: a jaxlib that dropped one fails here.
    environ = dict(os.environ)
    environ.pop("XLA_FLAGS", None)
    use_jax_xla_cpu_flags(environ)
    code = ("import jax, jax.numpy as jnp; "
            "print(float(jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(x) ** 2)))(jnp.ones(3))[0]))")
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert abs(float(result.stdout.split()[-1]) - 0.6397) < 1e-3


# Minor page faults per training step of a JAX process, as training starts it or not.
_FAULTS_PER_STEP = """
import resource, sys
import numpy as np, keras, keras_astpe
from keras_astpe.training import distribution
if sys.argv[1] == "training":
    distribution.start("none")
model = keras_astpe.build_model("none", preset="ast-pe-small", num_classes=10)
model.compile(optimizer="adam", loss="binary_crossentropy")
x = np.random.rand(8, 992, 64).astype("float32")
y = (np.random.rand(8, 10) > 0.5).astype("float32")
for _ in range(2):
    model.train_on_batch(x, y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    model.train_on_batch(x, y)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


@pytest.mark.backend_agnostic
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_jax_training_steps_reuse_freed_memory():
    # Without keep_freed_memory, XLA:CPU's per-step temporary buffer (~180 MB here, more
    # than a thread's arena holds) is mapped afresh and faulted in page by page each step.
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environ.update(KERAS_BACKEND="jax")
    faults = {}
    for mode in ("plain", "training"):
        result = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP, mode], env=environ,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        faults[mode] = float(result.stdout.split()[-1])
    assert faults["training"] < max(100.0, faults["plain"] / 10), faults


def test_jax_is_cpu_only_by_its_platforms_or_plugins():
    assert jax_is_cpu_only({"JAX_PLATFORMS": "cpu"})
    assert not jax_is_cpu_only({"JAX_PLATFORMS": "cuda,cpu"})
    from importlib.metadata import distributions

    plugins = [d for d in distributions()
               if (d.metadata["Name"] or "").lower().startswith(("jax-cuda", "jax_cuda", "libtpu"))]
    assert jax_is_cpu_only({}) == (not plugins)


def test_malloc_the_user_tuned_is_left_alone():
    assert keep_freed_memory({"MALLOC_ARENA_MAX": "4"}) is False
    assert keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}) is False


@pytest.mark.backend_agnostic
def test_tensorflow_on_first_use_is_tensorflow():
    import tensorflow

    lazy = _TensorFlowOnUse()
    assert not hasattr(lazy, "__wrapped__")  # tools probing dunders do not import it
    assert lazy.signal is tensorflow.signal
    assert "signal" in vars(lazy)  # looked up once


_VISIBLE_DEVICE_CALLS = """
import tensorflow as tf
calls = []
tf.config.set_visible_devices = lambda devices, kind=None: calls.append((list(devices), kind))
import keras_astpe
print(calls)
"""


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_tensorflow_keeps_off_the_gpus_of_other_backends(backend):
    pytest.importorskip(backend)
    result = subprocess.run([sys.executable, "-c", _VISIBLE_DEVICE_CALLS],
                            env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = [] if backend == "tensorflow" else [([], "GPU")]
    assert result.stdout.split("\n")[-2] == str(expected)
