"""The package's public surface, and the tensorflow-io decision (see README)."""

import os
import subprocess
import sys
from pathlib import Path

import keras
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


# A process where TensorFlow cannot be imported (blocked in sys.modules, as if absent).
_WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None
import numpy as np, keras, keras_astpe
x = np.random.rand(2, 992, 64).astype("float32")
y = (np.random.rand(2, 5) > 0.5).astype("float32")
for pe in keras_astpe.PE_KINDS:
    model = keras_astpe.build_model(pe, preset="ast-pe-tiny", num_classes=5)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    assert np.isfinite(model.train_on_batch(x, y, return_dict=True)["loss"])
    path = sys.argv[1] + f"/{pe}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
print("tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
"""


@pytest.mark.slow
def test_models_build_train_save_and_load_without_tensorflow(tmp_path):
    """On JAX and PyTorch the model path needs no TensorFlow (a machine with only JAX or
    PyTorch for the accelerator); scoring audio neither (`tests/test_tag_without_tensorflow.py`)."""
    if keras.backend.backend() == "tensorflow":
        pytest.skip("the TensorFlow backend needs TensorFlow")
    result = subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW, str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "False"


@pytest.mark.backend_agnostic
def test_the_tune_recipe_names_its_extra_where_keras_tuner_is_missing():
    code = ("import runpy, sys; sys.modules['keras_tuner'] = None; "
            "sys.argv = ['recipes/tune.py']; runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'error: recipes/tune.py needs keras-tuner: pip install -e ".[tune]"')


@pytest.mark.backend_agnostic
def test_the_all_extra_installs_every_extra():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (everything,) = extras["all"]
    name, listed = everything.rstrip("]").split("[")
    assert name == project["name"]
    assert set(listed.split(",")) == set(extras) - {"all"}
