import os
import subprocess
import sys

import pytest

from keras_astpe._startup import (
    JAX_XLA_CPU_FLAGS,
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
