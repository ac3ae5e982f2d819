"""The package's public surface, and the tensorflow-io decision (see README)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import keras_astpe

ROOT = Path(__file__).resolve().parent.parent


def test_public_api():
    assert callable(keras_astpe.build_model)
    assert len(keras_astpe.PE_KINDS) == 7
    assert {"ast-pe", "ast", "ast-pe-small", "ast-pe-tiny"} <= set(keras_astpe.PRESETS)
    assert keras_astpe.__version__


@pytest.mark.backend_agnostic
def test_import_never_loads_tensorflow_io():
    """tensorflow-io's compiled ops fail to load on TF >= 2.17 and print warnings when
    imported; the library uses core TensorFlow only and must never import it."""
    code = ("import sys, keras_astpe, keras_astpe.data.schema, keras_astpe.training; "
            "print('tensorflow_io' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"
    assert "tensorflow_io" not in result.stderr and "tensorflow-io" not in result.stderr


@pytest.mark.backend_agnostic
def test_library_source_never_imports_tensorflow_io():
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "keras_astpe").rglob("*.py")
                 if "tensorflow_io" in path.read_text()]
    assert offenders == []
