"""recipes/predict.py as a user runs it: a subprocess on a saved tiny model and real files."""

import re

import keras
import numpy as np
import pytest
import soundfile as sf

from keras_astpe import build_model
from keras_astpe.inference import tag
from keras_astpe.normalization import NormalizationStats
from tests.recipes.running import run_recipe
from tests.taggers import tagger

pytestmark = pytest.mark.backend_agnostic

CLASSES = ("dog", "rain", "siren", "speech")


def _run(*args):
    return run_recipe("predict", *args)


def _noise(samples, seed):
    return (0.3 * np.random.default_rng(seed).uniform(-1, 1, samples)).astype(np.float32)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = tagger("conditional", class_names=CLASSES, stats=NormalizationStats(-6.0, 2.0))
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Files of several formats and rates, a nested folder, and files that cannot be scored."""
    root = tmp_path_factory.mktemp("audio")
    (root / "nested").mkdir()
    sf.write(root / "a_stereo.wav", np.stack([_noise(88200, 1), _noise(88200, 2)], 1), 44100,
             subtype="PCM_16")
    sf.write(root / "nested" / "b.flac", _noise(24000, 3), 8000)
    sf.write(root / "c_long.ogg", _noise(12 * 22050, 4), 22050)
    sf.write(root / "d_short.wav", _noise(3000, 5), 16000)  # under one patch (5360 samples)
    (root / "e_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    (root / "notes.txt").write_text("not audio, not picked up")
    return root


def test_folder_prints_top_classes_per_file_and_counts_what_it_skipped(model_path, folder):
    result = _run(f"--model={model_path}", f"--audio={folder}", "--top_k=2")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    headers = [line for line in lines if not line.startswith("  ")][:-1]
    assert headers == [f"{folder / 'a_stereo.wav'} (2.00 s, 44100 Hz)",
                       f"{folder / 'c_long.ogg'} (12.00 s, 22050 Hz)",
                       f"{folder / 'nested' / 'b.flac'} (3.00 s, 8000 Hz)"]
    assert lines[-1] == "Scored 3 of 5 files; skipped 2 (too_short: 1, unreadable: 1)."
    assert f"skipped {folder / 'd_short.wav'}: " in result.stderr
    assert "is too short: the model needs at least 5360 samples" in result.stderr
    assert f"skipped {folder / 'e_broken.wav'}: " in result.stderr

    model = keras.saving.load_model(model_path)
    expected = tag(model, folder / "a_stereo.wav", top_k=2)
    printed = [re.match(r"  (\d\.\d{4})  (.+)$", line).groups() for line in lines[1:3]]
    assert [name for _, name in printed] == [name for name, _ in expected]
    np.testing.assert_allclose([float(score) for score, _ in printed],
                               [score for _, score in expected], atol=1e-4)


def test_one_file_with_windows(model_path, folder):
    result = _run(f"--model={model_path}", f"--audio={folder / 'c_long.ogg'}", "--top_k=4",
                  "--window_seconds=5", "--hop_seconds=2.5", "--aggregation=max")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and lines[-1] == "Scored 1 of 1 files."
    model = keras.saving.load_model(model_path)
    expected = tag(model, folder / "c_long.ogg", window_seconds=5, hop_seconds=2.5,
                   aggregation="max")
    assert [line.split()[1] for line in lines[1:5]] == [name for name, _ in expected]


@pytest.mark.parametrize("args, message", [
    (["--audio={folder}/e_broken.wav"], "e_broken.wav: "),
    (["--audio={folder}/d_short.wav"], "is too short"),
    (["--audio={folder}", "--hop_seconds=1"], "hop_seconds needs window_seconds"),
])
def test_errors_are_one_line(model_path, folder, args, message):
    result = _run(f"--model={model_path}", *[arg.format(folder=folder) for arg in args])
    assert result.returncode == 1
    assert re.search(f"error: .*{message}", result.stderr.strip().splitlines()[-1])


def test_model_without_front_end_says_how_to_attach_one(tmp_path, folder):
    path = tmp_path / "old.keras"
    build_model("none", preset="ast-pe-tiny", num_classes=2).save(path)
    result = _run(f"--model={path}", f"--audio={folder}")
    assert result.returncode == 1
    assert "carries no audio converter" in result.stderr
    assert "keras_astpe.attach_audio_converter(" in result.stderr


def test_folder_without_audio_files(model_path, tmp_path):
    (tmp_path / "readme.txt").write_text("nothing to score")
    result = _run(f"--model={model_path}", f"--audio={tmp_path}")
    assert result.returncode == 1
    assert "no audio files in this folder" in result.stderr
