import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_astpe._startup import (
    HUGE_PAGE_MALLOC,
    JAX_XLA_CPU_FLAGS,
    _glibc_has_hugetlb,
    use_jax_xla_cpu_flags,
    with_huge_page_malloc,
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


def test_huge_page_malloc_joins_the_users_tunables():
    assert with_huge_page_malloc({})["GLIBC_TUNABLES"] == HUGE_PAGE_MALLOC
    joined = with_huge_page_malloc({"GLIBC_TUNABLES": "glibc.malloc.check=0", "A": "1"})
    assert joined == {"GLIBC_TUNABLES": f"glibc.malloc.check=0:{HUGE_PAGE_MALLOC}", "A": "1"}
    chosen = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert with_huge_page_malloc(chosen) == chosen


_RESTARTING = """
import ctypes, os, sys
from keras_astpe._startup import restart_with_huge_page_malloc
print("start", os.getpid(), flush=True)
restart_with_huge_page_malloc()

def huge_kib():
    lines = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")]
    return int(lines[0].split()[1]) if lines else 0

before, size = huge_kib(), 64 * 2**20
malloc = ctypes.CDLL(None).malloc
malloc.restype, malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
ctypes.memset(malloc(size), 1, size)  # a fresh mapping, written
print("ran", os.getpid(), os.environ["GLIBC_TUNABLES"], "|".join(sys.argv[1:]),
      huge_kib() - before, sep="\\t")
"""


@pytest.mark.backend_agnostic
@pytest.mark.skipif(not _glibc_has_hugetlb(), reason="needs glibc >= 2.35")
def test_a_program_restarts_itself_once_with_huge_page_malloc(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(_RESTARTING)
    environ = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.check=0")
    result = subprocess.run([sys.executable, str(script), "--flag=1", "two words"],
                            env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n")
    starts = [line.split()[1] for line in lines if line.startswith("start")]
    (ran,) = [line.split("\t")[1:] for line in lines if line.startswith("ran")]
    pid, tunables, argv, huge_kib = ran
    assert starts == [pid, pid]  # one restart, as the same process
    assert tunables == f"glibc.malloc.check=0:{HUGE_PAGE_MALLOC}"
    assert argv == "--flag=1|two words"
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():
        assert int(huge_kib) >= 32 * 1024  # glibc put the mapping on huge pages
