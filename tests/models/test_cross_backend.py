"""Same weights, same outputs under TensorFlow, JAX and PyTorch; `.keras` files move freely.

Each backend runs in its own process (a process has one Keras backend): every backend
builds and saves one model per PE kind, then every backend loads every backend's files
and predicts the same inputs. All predictions must agree to 1e-5.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_astpe import PE_KINDS

pytestmark = pytest.mark.backend_agnostic

BACKENDS = ("tensorflow", "jax", "torch")
ROOT = Path(__file__).resolve().parents[2]

SAVE = textwrap.dedent("""
    import sys, keras, numpy as np, keras_astpe
    out = sys.argv[1]
    keras.utils.set_random_seed(7)
    for pe in keras_astpe.PE_KINDS:
        model = keras_astpe.build_model(pe, preset="ast-pe-tiny", num_classes=4, num_frames=128)
        keras.saving.save_model(model, f"{out}/{keras.backend.backend()}-{pe}.keras")
""")

PREDICT = textwrap.dedent("""
    import sys, glob, os, keras, numpy as np
    import keras_astpe  # registers the classes; no custom_objects needed
    out = sys.argv[1]
    features = np.load(f"{out}/features.npy")
    for path in sorted(glob.glob(f"{out}/*.keras")):
        model = keras.saving.load_model(path, safe_mode=True)
        scores = keras.ops.convert_to_numpy(model.predict(features, verbose=0))
        name = os.path.basename(path)[:-len(".keras")]
        np.save(f"{out}/{name}.by-{keras.backend.backend()}.npy", scores)
""")


def _run(backend, script, out):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script, str(out)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{backend} failed:\n{result.stderr[-3000:]}"


@pytest.mark.slow
def test_same_outputs_on_every_backend(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "features.npy", rng.random((2, 160, 64), dtype=np.float32))
    for backend in BACKENDS:
        _run(backend, SAVE, tmp_path)
    for backend in BACKENDS:
        _run(backend, PREDICT, tmp_path)

    worst = {}
    for saved_by in BACKENDS:
        for pe in PE_KINDS:
            runs = {by: np.load(tmp_path / f"{saved_by}-{pe}.by-{by}.npy") for by in BACKENDS}
            for by in BACKENDS:
                diff = float(np.abs(runs[by] - runs[saved_by]).max())
                worst[f"{saved_by}->{by}:{pe}"] = diff
    print(json.dumps(worst, indent=1))
    assert max(worst.values()) < 1e-5, {k: v for k, v in worst.items() if v >= 1e-5}
