"""Runs the test suite once per Keras backend, each in its own process.

    python tests/run_backends.py                 # tensorflow, jax, torch
    python tests/run_backends.py --backends jax  # one backend
    python tests/run_backends.py -- -k attention # extra pytest arguments after --

Backend-sensitive tests run under every backend; tests marked `backend_agnostic` run in the
tensorflow pass only. Each pass runs on two pytest-xdist workers (a test file stays on one
worker, with its module fixtures). Fails if any backend fails or collects no test.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")


def _counts(junit_xml):
    if not junit_xml.exists():
        return None
    root = ET.parse(junit_xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, failures, errors, skipped = (
        int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")
    )
    return {"passed": total - failures - errors - skipped, "failed": failures + errors,
            "skipped": skipped}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            junit = Path(tmp) / f"{backend}.xml"
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-n", "2", "--dist", "loadfile",
                   f"--junitxml={junit}", *args.pytest_args]
            print(f"\n===== backend: {backend} =====\n$ KERAS_BACKEND={backend} {' '.join(cmd)}",
                  flush=True)
            start = time.monotonic()
            code = subprocess.call(cmd, cwd=ROOT, env=env)
            results[backend] = (code, _counts(junit), time.monotonic() - start)

    print("\n===== summary: backends exercised =====")
    ok = True
    passed = failed = skipped = 0
    for backend, (code, counts, seconds) in results.items():
        counts = counts or {"passed": 0, "failed": 0, "skipped": 0}
        backend_ok = code == 0 and counts["passed"] > 0
        ok &= backend_ok
        passed, failed, skipped = (passed + counts["passed"], failed + counts["failed"],
                                   skipped + counts["skipped"])
        print(f"{backend:<11} {'ok' if backend_ok else 'FAILED':<7} "
              f"passed={counts['passed']:<4} failed={counts['failed']:<3} "
              f"skipped={counts['skipped']:<4} exit={code} time={seconds:.0f}s")
    if not ok and failed == 0:
        failed = 1  # a backend crashed or collected nothing: never report a clean run
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
