"""recipes/predict.py as a user runs it: a subprocess on a saved tiny model and real files:
printed top classes, windows, the --output results files, --timeline and the progress line."""

import csv
import json
import re

import keras
import numpy as np
import pytest
import soundfile as sf

from keras_astpe import build_model
from keras_astpe.data.audio_io import load_audio
from keras_astpe.inference import Windows, WindowSettings, score_clip, tag
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
    (["--audio={folder}", "--whole_clips", "--window_seconds=5"],
     "whole_clips scores every clip at once"),
    (["--audio={folder}", "--output=results.txt"], "expected a file name ending with .csv"),
    (["--audio={folder}", "--all_scores"], "give --output too"),
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


def _expected(model_path, folder, name, **settings):
    model = keras.saving.load_model(model_path)
    waveform = load_audio(folder / name).waveform
    return model, score_clip(model, waveform, Windows.for_model(model,
                                                                WindowSettings(**settings)))


def test_output_csv_and_jsonl_hold_each_files_results(model_path, folder, tmp_path):
    csv_path, jsonl_path = tmp_path / "out" / "results.csv", tmp_path / "results.jsonl"
    for output, extra in ((csv_path, ["--top_k=2"]), (jsonl_path, ["--all_scores"])):
        result = _run(f"--model={model_path}", f"--audio={folder}", f"--output={output}",
                      *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.splitlines() == [
            f"Scored 3 of 5 files; skipped 2 (too_short: 1, unreadable: 1); results in "
            f"{output}."]
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "duration_s", "sample_rate", "windows", "error",
                             "class_1", "score_1", "class_2", "score_2"]
    assert [row["file"] for row in rows] == [str(folder / name) for name in (
        "a_stereo.wav", "c_long.ogg", "d_short.wav", "e_broken.wav", "nested/b.flac")]
    model, expected = _expected(model_path, folder, "c_long.ogg")
    long = rows[1]
    assert (long["duration_s"], long["sample_rate"], long["windows"], long["error"]) == (
        "12.000", "22050", "2", "")
    top = np.argsort(-expected.scores)[:2]
    assert [long["class_1"], long["class_2"]] == [CLASSES[i] for i in top]
    np.testing.assert_allclose([float(long["score_1"]), float(long["score_2"])],
                               expected.scores[top], atol=1e-5)
    assert "is too short" in rows[2]["error"] and rows[2]["score_1"] == ""
    assert "e_broken.wav" in rows[3]["error"]

    records = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert len(records) == 5
    assert set(records[1]) == {"file", "duration_s", "sample_rate", "windows", "scores"}
    assert list(records[1]["scores"]) == list(CLASSES)
    np.testing.assert_allclose(list(records[1]["scores"].values()), expected.scores,
                               atol=1e-5)
    assert set(records[3]) == {"file", "error"}


def test_timeline_writes_each_windows_scores_and_a_plot(model_path, folder, tmp_path):
    timelines = tmp_path / "timelines"
    result = _run(f"--model={model_path}", f"--audio={folder}", "--timeline",
                  f"--timeline_dir={timelines}", "--hop_seconds=1", "--top_k=2",
                  "--window_batch=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].endswith(f"; timelines in {timelines}.")
    assert sorted(str(p.relative_to(timelines)) for p in timelines.rglob("*.*")) == [
        "a_stereo.wav.csv", "a_stereo.wav.png", "c_long.ogg.csv", "c_long.ogg.png",
        "nested/b.flac.csv", "nested/b.flac.png"]
    with open(timelines / "c_long.ogg.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["start_s", "end_s", *CLASSES]
    # 12 s, windows of 9.935 s every second: starts 0, 1, 2 and 2.065 (ending with the clip)
    assert [row[:2] for row in rows[1:]] == [["0.000", "9.935"], ["1.000", "10.935"],
                                             ["2.000", "11.935"], ["2.065", "12.000"]]
    _, expected = _expected(model_path, folder, "c_long.ogg", hop_seconds=1.0)
    np.testing.assert_allclose([[float(v) for v in row[2:]] for row in rows[1:]],
                               expected.window_scores, atol=1e-5)
    with open(timelines / "a_stereo.wav.csv", newline="") as f:
        assert [row[:2] for row in csv.reader(f)][1:] == [["0.000", "2.000"]]  # whole
    assert (timelines / "c_long.ogg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 4 windows in batches of 2: the progress line of a clip scored in several batches
    assert re.search(r"c_long\.ogg: 4 windows in \d+\.\d s", result.stderr)
    assert "a_stereo.wav: " not in result.stderr
