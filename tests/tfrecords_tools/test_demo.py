"""Demo generator: real AudioSet/ESC-50 formats, variety of files, idempotence, conversion."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from keras_astpe.data import dataset_info
from tfrecords_tools import audioset, demo, esc50

pytestmark = pytest.mark.backend_agnostic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_LABELS = os.path.join(ROOT, "keras_astpe", "data", "audioset_class_labels_indices.csv")
TINY = demo.SIZES["tiny"]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return demo.generate_demo(str(tmp_path_factory.mktemp("demo")), seed=3, size="tiny")


def test_audioset_part_has_the_real_formats(tiny_demo):
    real = {mid: (index, name) for index, mid, name in audioset.read_class_labels(REAL_LABELS)}
    classes = audioset.read_class_labels(tiny_demo["audioset_class_labels"])
    assert len(classes) == len(demo.CLASSES)
    for position, ((index, mid, name), (real_index, *_)) in enumerate(
            zip(classes, demo.CLASSES, strict=True)):
        assert index == position and real[mid] == (real_index, name)
    assert '"Beep, bleep"' in open(tiny_demo["audioset_class_labels"]).read()

    known = {mid for _, mid, _ in classes}
    for split in demo.AUDIOSET_SPLITS:
        path = tiny_demo[f"audioset_{split}_segments"]
        lines = open(path).read().splitlines()
        assert all(line.startswith("#") for line in lines[:3]) and not lines[3].startswith("#")
        assert lines[3].count(", ") == 3 and lines[3].endswith('"')
        segments = audioset.read_segments(path)
        assert len(segments) == TINY[split] + TINY["missing"]
        assert all(s.end - s.start == 10.0 and 1 <= len(s.mids) <= 3 for s in segments)
        assert {mid for s in segments for mid in s.mids} == known  # every class in every split


def test_audio_files_vary_in_name_format_rate_and_channels(tiny_demo):
    segments = {s.ytid: s for split in demo.AUDIOSET_SPLITS
                for s in audioset.read_segments(tiny_demo[f"audioset_{split}_segments"])}
    files, unrecognised = audioset.index_audio_files(tiny_demo["audioset_audio"], set(segments))
    assert not unrecognised
    assert len(files) == sum(TINY[split] for split in demo.AUDIOSET_SPLITS)
    names, rates, channels, extensions = set(), set(), set(), set()
    for ytid, (found,) in files.items():
        assert audioset.match_files(segments[ytid], [found], "eval") == [found]
        info = sf.info(found.path)
        rates.add(info.samplerate)
        channels.add(info.channels)
        extensions.add(found.path.rsplit(".", 1)[1])
        assert info.duration == pytest.approx(10.0, abs=0.01)
        names.add((os.path.basename(found.path).startswith("Y"), found.start is not None,
                   found.end is not None))
    assert rates == {16000, 22050, 44100} and channels == {1, 2}
    assert extensions == {"wav", "flac", "ogg"}
    assert len(names) >= 3
    assert any(ytid.startswith("-") for ytid in segments)


def test_esc50_part(tiny_demo):
    with open(tiny_demo["esc50_meta"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["filename", "fold", "target", "category", "esc10", "src_file",
                             "take"]
    assert len(rows) == len(demo.CLASSES) * TINY["esc50_per_class"]
    assert {row["fold"] for row in rows} == {"1", "2", "3", "4", "5"}
    for row in rows[:5]:
        fold, source, take, target = row["filename"][:-4].split("-")
        assert (fold, source, take, target) == (row["fold"], row["src_file"], row["take"],
                                                row["target"])
        info = sf.info(os.path.join(tiny_demo["esc50_audio"], row["filename"]))
        assert (info.samplerate, info.channels, info.frames) == (44100, 1, 5 * 44100)


def test_classes_differ_and_clips_are_clean():
    rng = np.random.default_rng(0)
    sr = 16000
    centroids = []
    for class_id in range(len(demo.CLASSES)):
        clip = demo.synthesize_clip(rng, [class_id], 5.0, sr)
        assert clip.shape == (5 * sr, 1) and clip.dtype == np.float32
        assert np.all(np.isfinite(clip)) and np.max(np.abs(clip)) < 1.0
        spectrum = np.abs(np.fft.rfft(clip[:, 0])) ** 2
        centroids.append(np.sum(np.fft.rfftfreq(5 * sr, 1 / sr) * spectrum) / np.sum(spectrum))
    hiss, rumble = centroids[2], centroids[3]
    assert hiss > 3000 > 300 > rumble


def test_idempotent_and_deterministic(tmp_path, tiny_demo):
    eval_dir = os.path.join(tiny_demo["audioset_audio"], "eval")
    stats = {name: os.stat(os.path.join(eval_dir, name)).st_mtime_ns
             for name in os.listdir(eval_dir)}
    assert demo.generate_demo(tiny_demo["root"], seed=3, size="tiny") == tiny_demo
    assert stats == {name: os.stat(os.path.join(eval_dir, name)).st_mtime_ns
                     for name in os.listdir(eval_dir)}
    again = demo.generate_demo(str(tmp_path / "again"), seed=3, size="tiny")
    for key in ("audioset_eval_segments", "esc50_meta"):
        assert open(again[key]).read() == open(tiny_demo[key]).read()
    other = demo.generate_demo(str(tmp_path / "again"), seed=4, size="tiny")
    assert open(other["esc50_meta"]).read() != open(tiny_demo["esc50_meta"]).read()


def test_foreign_folders_are_not_overwritten(tmp_path):
    (tmp_path / "audioset").mkdir()
    with pytest.raises(FileExistsError):
        demo.generate_demo(str(tmp_path), size="tiny")


def test_demo_converts(tmp_path, tiny_demo):
    output = tmp_path / "audioset_records"
    summaries = audioset.convert_audioset(tiny_demo["audioset"], str(output),
                                          num_workers=2, progress=False)
    for split in demo.AUDIOSET_SPLITS:
        assert summaries[split]["clips_written"] == TINY[split]
        assert summaries[split]["missing"] == TINY["missing"]
        assert summaries[split]["skipped"] == 0
        assert all(count > 0 for count in summaries[split]["label_counts"])
    summary = esc50.convert_esc50(tiny_demo["esc50"], str(tmp_path / "esc50_records"),
                                  num_workers=2, progress=False)
    assert summary["clips_written"] == len(demo.CLASSES) * TINY["esc50_per_class"]
    names = dataset_info.read_class_names(tmp_path / "esc50_records" / "classes.csv")
    assert names == [category for _, _, _, category, _ in demo.CLASSES]


def test_prepare_demo_data_converts_once(tmp_path):
    from keras_astpe.data.dataset_info import DatasetInfo

    root = tmp_path / "demo"
    data_dir = demo.prepare_demo_data("esc50", root=root, size="tiny", progress=False)
    info = DatasetInfo.load(data_dir)
    files = info.split_files("esc50")
    assert len(files) == 1 and info.num_classes == 10 and not info.multi_label
    assert info.num_clips("esc50") == 50 and info.num_clips("esc50", folds=[1, 2]) == 20
    mtime = os.path.getmtime(files[0])
    assert demo.prepare_demo_data("esc50", root=root, size="tiny") == data_dir
    assert os.path.getmtime(files[0]) == mtime
    with pytest.raises(ValueError, match="dataset"):
        demo.prepare_demo_data("speech", root=root)


def test_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.demo", f"--output_dir={tmp_path}",
         "--size=tiny", "--seed=1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.path.exists(tmp_path / "audioset" / "eval_segments.csv")
    assert os.path.exists(tmp_path / ".demo-complete.json")
