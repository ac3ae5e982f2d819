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
