"""Audio in, scores out on JAX and PyTorch where TensorFlow is not installed: `tag` and
`recipes/predict.py` give the TensorFlow backend's scores (1e-4) for a WAV file."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import soundfile as sf
from taggers import CLASSES, noise, tagger

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Scores the WAV with `tag` in a process where TensorFlow cannot be imported, then with
# recipes/predict.py in the same process; prints both and whether TensorFlow was imported.
_WITHOUT_TENSORFLOW = """
import json, runpy, sys
sys.modules["tensorflow"] = None  # as if not installed
import keras, keras_astpe
model_path, wav_path, output = sys.argv[1:4]
model = keras.saving.load_model(model_path)
tagged = dict(keras_astpe.tag(model, wav_path))
sys.argv = ["recipes/predict.py", "--model=" + model_path, "--audio=" + wav_path,
            "--all_scores", "--output=" + output]
try:
    runpy.run_path("recipes/predict.py", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps({"tag": tagged, "imported_tensorflow": sys.modules.get("tensorflow") is not None}))
"""

_WITH_TENSORFLOW = """
import json, sys
import keras, keras_astpe
print(json.dumps(dict(keras_astpe.tag(keras.saving.load_model(sys.argv[1]), sys.argv[2]))))
"""


def _run(code, *args, backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("pe", ["time_alibi", "learned_relative"])
def test_tag_and_predict_score_a_wav_without_tensorflow(pe, tmp_path):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        pytest.skip("the TensorFlow backend needs TensorFlow")
    model_path, wav_path = tmp_path / "model.keras", tmp_path / "clip.wav"
    tagger(pe).save(model_path)
    sf.write(wav_path, noise(int(4.2 * 16000), seed=11), 16000, subtype="PCM_16")
    reference = _run(_WITH_TENSORFLOW, model_path, wav_path, backend="tensorflow")
    result = _run(_WITHOUT_TENSORFLOW, model_path, wav_path, tmp_path / "out.jsonl",
                  backend=backend)
    assert result["imported_tensorflow"] is False
    predicted = json.loads((tmp_path / "out.jsonl").read_text())["scores"]
    for scores in (result["tag"], predicted):
        assert sorted(scores) == sorted(CLASSES)
        np.testing.assert_allclose([scores[name] for name in CLASSES],
                                   [reference[name] for name in CLASSES], atol=1e-4)
