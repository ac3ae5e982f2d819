"""Runs a recipe as a user does (`python recipes/<name>.py ...`), in its own process under
the TensorFlow backend, and returns the CompletedProcess (stdout, stderr, returncode)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_recipe(name, *args, cwd=ROOT, timeout=300):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
