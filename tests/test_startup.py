"""The process start-up (`keras_astpe_startup`), and that importing keras_astpe has none."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_astpe._startup import _TensorFlowOnUse
from keras_astpe_startup import (
    JAX_XLA_CPU_FLAGS,
    jax_is_cpu_only,
    keep_freed_memory,
    use_jax_xla_cpu_flags,
    without_jax_xla_cpu_flags,
)

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["tensorflow", "jax", "torch"]


def _jaxlib_takes_the_flags():
    environ = {}
    use_jax_xla_cpu_flags(environ)
    return bool(environ)


def _jax_flags_apply():
    pytest.importorskip("jax")
    if not _jaxlib_takes_the_flags():
        pytest.skip("jaxlib < 0.10: the flags are left out")


def test_jax_xla_cpu_flags_join_the_users_once():
    _jax_flags_apply()
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
    _jax_flags_apply()
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
    pytest.importorskip("jax")
    environ = dict(os.environ)
    environ.pop("XLA_FLAGS", None)
    use_jax_xla_cpu_flags(environ)
    code = ("import jax, jax.numpy as jnp; "
            "print(float(jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(x) ** 2)))(jnp.ones(3))[0]))")
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert abs(float(result.stdout.split()[-1]) - 0.6397) < 1e-3


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


# What a process looks like after `code`: its environment's changes, whether TensorFlow is
# imported, its calls to tf.config.set_visible_devices and to glibc's mallopt.
_PROBE = """
import ctypes, json, os, sys
calls = {"mallopt": 0, "set_visible_devices": []}

class _CDLL(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            calls["mallopt"] += 1
        return super().__getattr__(name)

ctypes.CDLL = _CDLL
if sys.argv[1] == "tensorflow":
    import tensorflow as tf
    tf.config.set_visible_devices = (
        lambda devices, kind=None: calls["set_visible_devices"].append([list(devices), kind]))
if sys.argv[2] == "keras first":
    import keras  # Keras sets variables of its own on import
before = dict(os.environ)
exec(sys.argv[3])
after = dict(os.environ)
changed = {k: after.get(k) for k in set(before) | set(after) if before.get(k) != after.get(k)}
print(json.dumps({"changed": changed, "tensorflow": "tensorflow" in sys.modules, **calls}))
"""


def _probe(backend, code, *, with_tensorflow, keras_first, **env):
    pytest.importorskip(backend)
    environ = {k: v for k, v in os.environ.items()
               if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "GLIBC_TUNABLES")
               and not k.startswith("MALLOC_")}
    environ.update(KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", **env)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "tensorflow" if with_tensorflow else "-",
         "keras first" if keras_first else "-", code],
        env=environ, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("backend", BACKENDS)
def test_importing_keras_astpe_changes_nothing_in_the_process(backend):
    # With TensorFlow imported first (where it could hide the GPUs) and without it.
    report, _ = _probe(backend, "import keras_astpe, keras_astpe.training",
                       with_tensorflow=True, keras_first=True)
    assert report["changed"] == {}  # XLA_FLAGS, TF_CPP_MIN_LOG_LEVEL, ... as they were
    assert report["set_visible_devices"] == []
    assert report["mallopt"] == 0
    if backend != "tensorflow":
        report, _ = _probe(backend, "import keras_astpe", with_tensorflow=False,
                           keras_first=True)
        assert report == {"changed": {}, "tensorflow": False, "mallopt": 0,
                          "set_visible_devices": []}


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("backend", BACKENDS)
def test_configure_sets_up_the_process_for_its_backend(backend):
    code = "import keras_astpe_startup; keras_astpe_startup.configure(); import keras_astpe"
    report, _ = _probe(backend, code, with_tensorflow=False, keras_first=False)
    changed = report["changed"]
    assert report["tensorflow"]
    assert changed.get("TF_CPP_MIN_LOG_LEVEL") == "3"  # before TensorFlow sets it to 1
    flags = changed.get("XLA_FLAGS") or ""
    assert (JAX_XLA_CPU_FLAGS[0] in flags) == (backend == "jax" and _jaxlib_takes_the_flags())
    assert report["mallopt"] == (1 if backend == "jax" else 0)  # JAX_PLATFORMS=cpu
    # The GPUs are hidden from TensorFlow (here imported first, to watch it) on JAX, PyTorch.
    report, _ = _probe(backend, code, with_tensorflow=True, keras_first=False)
    assert report["set_visible_devices"] == ([] if backend == "tensorflow" else [[[], "GPU"]])


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("backend", BACKENDS)
def test_configure_starts_tensorflow_without_its_log_lines(backend):
    code = ("import keras_astpe_startup; keras_astpe_startup.configure(); import keras_astpe; "
            "keras_astpe_startup.configure()")  # a second call does nothing
    report, stderr = _probe(backend, code, with_tensorflow=False, keras_first=False)
    assert report["tensorflow"]
    assert "absl::InitializeLog" not in stderr and "oneDNN" not in stderr, stderr[-2000:]


@pytest.mark.backend_agnostic
def test_every_recipe_configures_the_process_before_it_imports_keras():
    for path in sorted((ROOT / "recipes").glob("*.py")):
        body = ast.parse(path.read_text()).body
        statements = [node for node in body if not (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        calls = [i for i, node in enumerate(statements) if ast.unparse(node) ==
                 "keras_astpe_startup.configure()"]
        assert len(calls) == 1, path.name
        before = statements[:calls[0]]
        assert all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in before), path.name
        imported = {alias.name.split(".")[0] for node in before if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in before
                     if isinstance(node, ast.ImportFrom)}
        assert imported <= set(sys.stdlib_module_names) | {"keras_astpe_startup"}, path.name
