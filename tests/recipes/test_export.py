"""recipes/export.py as a user runs it: a subprocess on a saved tiny model; window and limit
flags."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.normalization import NormalizationStats
from tests.recipes.running import ROOT, run_recipe
from tests.taggers import tagger

pytestmark = pytest.mark.backend_agnostic

CLASSES = ("dog", "rain", "siren")


def _run(*args, cwd=ROOT):
    return run_recipe("export", *args, cwd=cwd)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = tagger("alibi_2d", class_names=CLASSES, stats=NormalizationStats(-6.0, 2.0))
    path = tmp_path_factory.mktemp("run") / "alibi_2d" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    return path


@pytest.mark.slow
def test_default_layout_under_saved_models_and_next_version(model_path, tmp_path):
    result = _run(f"--model={model_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first = tmp_path / "saved_models" / "serving" / "alibi_2d" / "1"
    assert result.stdout.split() == [str(first)]
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(first))
    assert (first / "assets" / "class_names.txt").read_text().splitlines() == list(CLASSES)

    windowed = _run(f"--model={model_path}", "--window_seconds=1", "--hop_seconds=0.5",
                    "--aggregation=max", "--window_batch=2", "--max_batch=1",
                    "--max_clip_seconds=3", cwd=tmp_path)  # the next version
    assert windowed.returncode == 0, windowed.stderr[-3000:]
    second = first.parent / "2"
    assert windowed.stdout.split() == [str(second)]
    waveform = tf.constant(np.random.default_rng(0).uniform(-0.3, 0.3, (1, 40000)), tf.float32)
    whole = tf.saved_model.load(str(first)).signatures["serving_default"](waveform=waveform)
    windows = tf.saved_model.load(str(second)).signatures["serving_default"](waveform=waveform)
    assert np.abs(whole["scores"].numpy() - windows["scores"].numpy()).max() > 1e-4
    limited = tf.saved_model.load(str(second)).signatures["serving_default"]
    for request, message in ((tf.concat([waveform, waveform], 0), "a batch of 2 waveforms is "
                              "over the limit of 1 per request (max_batch, set at export)"),
                             (tf.zeros([1, 4 * 16000]), "waveforms of 4 s are over the limit "
                              "of 3 s per clip (max_clip_seconds, set at export)")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            limited(waveform=request)


def test_name_version_and_refusing_to_replace_a_version(model_path, tmp_path):
    args = [f"--model={model_path}", f"--output_dir={tmp_path}", "--name=tagger",
            "--version=7"]
    result = _run(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(tmp_path / "tagger" / "7")]
    again = _run(*args)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'tagger' / '7'} already exists: choose another version, or "
        "overwrite it (overwrite=True, --overwrite)")


def test_onnx_and_litert_files_score_a_clip_as_the_model(model_path, tmp_path):
    import keras
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from tests.taggers import noise

    onnx_run = _run(f"--model={model_path}", "--format=onnx", f"--output_dir={tmp_path}")
    assert onnx_run.returncode == 0, onnx_run.stderr[-3000:]
    assert onnx_run.stdout.split() == [str(tmp_path / "alibi_2d.onnx")]
    litert_run = _run(f"--model={model_path}", "--format=litert", "--seconds=2",
                      f"--output_dir={tmp_path}", "--name=phone")
    assert litert_run.returncode == 0, litert_run.stderr[-3000:]
    assert litert_run.stdout.split() == [str(tmp_path / "phone.tflite")]
    assert (tmp_path / "phone.tflite.class_names.txt").read_text().splitlines() == list(
        CLASSES)
    model = keras.saving.load_model(model_path)
    waveform = noise(2 * 16000, seed=8)[None]
    expected = keras.ops.convert_to_numpy(model(model.audio_converter(waveform)))
    session = onnxruntime.InferenceSession(str(tmp_path / "alibi_2d.onnx"))
    scores = dict(zip([o.name for o in session.get_outputs()],
                      session.run(None, {"waveform": waveform}), strict=True))["scores"]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    runner = Interpreter(model_path=str(tmp_path / "phone.tflite")).get_signature_runner()
    np.testing.assert_allclose(runner(waveform=waveform)["scores"], expected, atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--format=onnx", "--hop_seconds=2"], "the window flags: only for --format=tf_saved_model"),
    (["--format=litert", "--version=3"], "--version: only for --format=tf_saved_model"),
    (["--seconds=10"], "--seconds is for --format=onnx and litert"),
    (["--format=torchscript"], "--format must be one of tf_saved_model, onnx, litert"),
])
def test_flags_of_another_format_are_refused(model_path, tmp_path, args, message):
    result = _run(f"--model={model_path}", f"--output_dir={tmp_path}", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not any(tmp_path.iterdir())
