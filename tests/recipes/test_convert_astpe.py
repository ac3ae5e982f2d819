"""recipes/convert_astpe.py as a user runs it: the paper's checkpoints, one or averaged."""


import joblib
import keras
import numpy as np
import pytest

from keras_astpe.conversion import convert_dienen
from tests.conversion import dienen_reference as reference
from tests.recipes.running import run_recipe

pytestmark = pytest.mark.backend_agnostic



def _run(*args):
    return run_recipe("convert_astpe", *args)


def test_swa_of_two_checkpoints_to_keras(tmp_path):
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"ckpt-{seed}.weights")
        joblib.dump(reference.checkpoint("learned_relative", np.random.default_rng(seed)),
                    paths[-1], compress=3)
    output = tmp_path / "relative.keras"
    result = _run(f"--checkpoint={paths[0]},{paths[1]}", "--pe=learned_relative",
                  f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "learned_relative, 2 checkpoint(s) averaged, 2 blocks of 32, 5 classes" in (
        result.stdout)
    model = keras.saving.load_model(output, safe_mode=True)
    waveform = np.random.default_rng(0).standard_normal((1, reference.SAMPLES)) * 0.3
    waveform = waveform.astype("float32")
    expected = convert_dienen(paths, "learned_relative")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(model.audio_converter(waveform))),
        keras.ops.convert_to_numpy(expected(expected.audio_converter(waveform))), atol=1e-6)


def test_wrong_kind_is_one_line(tmp_path):
    joblib.dump(reference.checkpoint("absolute", np.random.default_rng(0)),
                tmp_path / "a.weights")
    result = _run(f"--checkpoint={tmp_path / 'a.weights'}", "--pe=none",
                  f"--output={tmp_path / 'a.keras'}")
    assert result.returncode == 1
    assert "error:" in result.stderr and "a 'none' model has none of them" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
