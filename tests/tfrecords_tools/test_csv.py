"""CSV converter: ESC-50-, UrbanSound8K- and FSD50K-style metadata, single- and multi-label,
with a split column, a fold column or the file-name hash split; bad rows and columns."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from absl import flags

from keras_astpe import cli
from keras_astpe.data import dataset_info, pipeline, schema
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.models import LogMelAudioConverter
from tfrecords_tools import common, splits
from tfrecords_tools import csv as csv_converter

pytestmark = pytest.mark.backend_agnostic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERTER = LogMelAudioConverter()  # the paper's front end
# Each class's tone, so that a record's audio tells its label.
TONES = {"bird": 250.0, "cat": 500.0, "dog": 1000.0, "rain": 2000.0}


def _write_clip(path, labels, seconds=0.5, subtype="PCM_16"):
    """A clip holding the tones of its labels (44.1 kHz, as real sound collections are)."""
    t = np.arange(int(44100 * seconds)) / 44100
    x = sum(0.2 * np.sin(2 * np.pi * TONES[label] * t) for label in labels)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x, 44100, subtype=subtype)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _records(output_dir, split):
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*-of-*.tfrecord"))
    return {example["clip_id"].numpy().decode(): example
            for example in tf.data.TFRecordDataset(files).map(schema.decode_example)}


def _tones(waveform):
    """The TONES present in a 16 kHz waveform."""
    spectrum = np.abs(np.fft.rfft(waveform))
    frequencies = np.fft.rfftfreq(waveform.size, 1 / schema.SAMPLE_RATE)
    return {label for label, tone in TONES.items()
            if spectrum[np.argmin(np.abs(frequencies - tone))] > 0.2 * spectrum.max()}


def _batch(info, split, **kwargs):
    """One evaluation batch of a whole split: {clip_id: target row}."""
    dataset = pipeline.make_dataset(
        info.split_files(split), num_classes=info.num_classes, batch_size=64, training=False,
        clip_samples=16000, multi_label=info.multi_label, return_clip_ids=True,
        converter=CONVERTER, **kwargs)
    features, targets, clip_ids = next(iter(dataset))
    assert features.shape[0] == len(clip_ids) and np.isfinite(features.numpy()).all()
    return {clip_id.decode(): target for clip_id, target in zip(clip_ids.numpy(),
                                                                targets.numpy(), strict=True)}


@pytest.fixture
def esc50_style(tmp_path):
    """filename, fold, target, category (ESC-50): 4 classes x folds 1-3, audio/ beside meta/."""
    rows = []
    for fold in (1, 2, 3):
        for target, category in enumerate(TONES):
            name = f"{fold}-{100 + target}-A-0.wav"
            _write_clip(tmp_path / "audio" / name, [category])
            rows.append((name, fold, target, category))
    os.makedirs(tmp_path / "meta")
    return _write_csv(tmp_path / "meta" / "esc50.csv",
                      ("filename", "fold", "target", "category"), rows)


def test_single_label_with_a_split_column(tmp_path, capsys):
    """A user's own CSV: paths in sub-folders, split names as people write them, an extra
    column, a row naming a missing file."""
    rows, expected = [], {}
    for index in range(12):
        label = list(TONES)[index % 4]
        split = ("train", "Train", "val", "test")[index % 4] if index < 8 else "training"
        path = f"{label}/take{index}.flac"
        _write_clip(tmp_path / "sounds" / path, [label], subtype="PCM_24")
        rows.append((path, label, split, "notes"))
        expected[path] = (label, {"train": "train", "val": "validation", "test": "test",
                                  "training": "train"}[split.lower()])
    rows.append(("cat/gone.wav", "cat", "test", ""))
    csv_path = _write_csv(tmp_path / "labels.csv", ("path", "class", "Split", "comment"), rows)
    output = tmp_path / "out"
    summaries = csv_converter.convert_csv(csv_path, str(output),
                                          audio_dir=str(tmp_path / "sounds"), num_workers=1,
                                          progress=False)
    out = capsys.readouterr().out
    assert "4 classes, 13 clips, single-label" in out
    assert f"warning: {csv_path}:14: no audio file 'cat/gone.wav'" in out
    assert "split by column 'Split' (named): train 8, validation 2, test 2 clips" in out
    assert (output / "test-missing.txt").read_text() == "cat/gone.wav\n"
    assert [summaries[split]["clips_written"] for split in ("train", "validation", "test")] == [
        8, 2, 2]

    info = DatasetInfo.load(output)
    assert (info.name, info.kind, info.multi_label) == ("labels", "csv", False)
    assert info.class_names == tuple(sorted(TONES))
    assert dataset_info.read_class_names(output / "classes.csv") == sorted(TONES)
    assert {split: info.split(split).role for split in info.splits} == {
        "train": "train", "validation": "validation", "test": "test"}
    for split in info.splits:
        records = _records(output, split)
        assert set(records) == {path for path, (_, s) in expected.items() if s == split}
        for path, example in records.items():
            label = expected[path][0]
            assert example["labels"].numpy().tolist() == [info.class_names.index(label)]
            assert _tones(example["waveform"].numpy()) == {label}
    targets = _batch(info, "train")
    assert len(targets) == 8
    for path, target in targets.items():
        np.testing.assert_array_equal(
            target, np.eye(4)[info.class_names.index(expected[path][0])])


def test_folds_are_one_split_for_cross_validation(tmp_path, esc50_style):
    output = tmp_path / "out"
    summaries = csv_converter.convert_csv(esc50_style, str(output),
                                          audio_dir=str(tmp_path / "audio"), num_workers=1,
                                          progress=False)
    assert list(summaries) == ["train"]
    info = DatasetInfo.load(output)
    assert info.name == "esc50" and info.class_names == tuple(sorted(TONES))
    assert info.split("train").cross_validation_folds == (1, 2, 3)
    assert info.clips_per_fold("train") == {1: 4, 2: 4, 3: 4}
    assert summaries["train"]["columns"] == {"path": "filename", "label": "category",
                                             "split": "fold"}
    for clip_id, example in _records(output, "train").items():
        assert int(example["fold"]) == int(clip_id[0])
    targets = _batch(info, "train", folds=[2])
    assert sorted(targets) == [f"2-{100 + target}-A-0.wav" for target in range(4)]
    for clip_id, target in targets.items():
        category = list(TONES)[int(clip_id.split("-")[1]) - 100]
        np.testing.assert_array_equal(target, np.eye(4)[info.class_names.index(category)])


def test_urbansound8k_style_names_in_fold_folders(tmp_path):
    """slice_file_name, fsID, classID, class, fold: bare names found in audio/fold<N>/; a
    class in one fold only is named."""
    rows = []
    for fold in (1, 2):
        for class_id, label in enumerate(("dog", "rain")):
            name = f"{100 + class_id}-{class_id}-0-{fold}.wav"
            _write_clip(tmp_path / "audio" / f"fold{fold}" / name, [label])
            rows.append((name, 100 + class_id, class_id, label, fold))
    _write_clip(tmp_path / "audio" / "fold2" / "7-3-0-0.wav", ["bird"])
    rows.append(("7-3-0-0.wav", 7, 3, "bird", 2))
    csv_path = _write_csv(tmp_path / "UrbanSound8K.csv",
                          ("slice_file_name", "fsID", "classID", "class", "fold"), rows)
    output = tmp_path / "out"
    summaries = csv_converter.convert_csv(csv_path, str(output),
                                          audio_dir=str(tmp_path / "audio"), num_workers=1,
                                          progress=False)
    assert summaries["train"]["clips_written"] == 5
    info = DatasetInfo.load(output)
    assert info.class_names == ("bird", "dog", "rain")
    assert info.clips_per_fold("train") == {1: 2, 2: 3}
    records = _records(output, "train")
    assert _tones(records["7-3-0-0.wav"]["waveform"].numpy()) == {"bird"}


def test_single_label_without_a_split_column_splits_by_hash(tmp_path, capsys):
    names = [f"{speaker:08x}_nohash_{take}.wav" for speaker in range(8) for take in range(2)]
    rows = []
    for index, name in enumerate(names):
        label = ("dog", "cat")[index % 2]
        _write_clip(tmp_path / name, [label])
        rows.append((name, label))
    csv_path = _write_csv(tmp_path / "clips.csv", ("fname", "label"), rows)
    output = tmp_path / "out"
    summaries = csv_converter.convert_csv(csv_path, str(output), num_workers=1,
                                          progress=False)
    expected = {split: {name for name in names if splits.which_split(name) == split}
                for split in splits.SPLITS}
    assert all(expected.values())  # 00000000 and 00000007 validation, 00000002 test
    for split in splits.SPLITS:
        assert set(_records(output, split)) == expected[split]
        assert summaries[split]["clips_written"] == len(expected[split])
    sizes = ", ".join(f"{split} {len(expected[split])}" for split in splits.SPLITS)
    assert f"split by file-name hash (validation 10%, test 10%): {sizes} clips" in (
        capsys.readouterr().out)
    info = DatasetInfo.load(output)
    assert [info.num_clips(split) for split in splits.SPLITS] == [
        len(expected[split]) for split in splits.SPLITS]
    assert not info.multi_label and info.class_names == ("cat", "dog")


def _fsd50k_style(tmp_path):
    """fname (no extension), labels (quoted, comma-separated), mids, split (train/val)."""
    clips = {"64760": ("dog", "cat"), "16399": ("dog",), "16401": ("bird", "rain", "dog"),
             "61111": ("rain",), "30012": ("cat", "bird"), "5012": ("bird",)}
    rows = []
    for index, (fname, labels) in enumerate(clips.items()):
        _write_clip(tmp_path / "FSD50K.dev_audio" / f"{fname}.wav", labels)
        rows.append((fname, ",".join(labels), "/m/x", "val" if index % 3 == 2 else "train"))
    csv_path = _write_csv(tmp_path / "dev.csv", ("fname", "labels", "mids", "split"), rows)
    return csv_path, clips


def test_multi_label_with_a_split_column(tmp_path, capsys):
    csv_path, clips = _fsd50k_style(tmp_path)
    output = tmp_path / "out"
    summaries = csv_converter.convert_csv(
        csv_path, str(output), audio_dir=str(tmp_path / "FSD50K.dev_audio"), num_workers=1,
        progress=False)
    assert f"multi-label: 3 of 6 clips have several labels (e.g. {csv_path}:2: dog, cat)" in (
        capsys.readouterr().out)
    assert sorted(summaries) == ["train", "validation"]
    info = DatasetInfo.load(output)
    assert info.multi_label and info.class_names == tuple(sorted(TONES))
    assert set(_records(output, "validation")) == {"16401", "5012"}
    for split in ("train", "validation"):
        for fname, example in _records(output, split).items():
            assert _tones(example["waveform"].numpy()) == set(clips[fname])
        for fname, target in _batch(info, split).items():
            expected = np.zeros(4)
            expected[[info.class_names.index(label) for label in clips[fname]]] = 1
            np.testing.assert_array_equal(target, expected)


def test_multi_label_without_a_split_column(tmp_path):
    """Labels separated by ';', one file on two rows (its labels merged), no split column;
    --split_column=none ignores the FSD50K-style one."""
    rows = [("a/00000000_nohash_0.wav", "dog; cat"), ("a/00000002_nohash_0.wav", "rain"),
            ("b/00000001_nohash_0.wav", "bird"), ("b/00000001_nohash_0.wav", "dog"),
            ("b/00000003_nohash_0.wav", "cat;dog;")]
    for path, labels in rows:
        _write_clip(tmp_path / path, [label.strip() for label in labels.split(";")
                                      if label.strip()])
    csv_path = _write_csv(tmp_path / "tags.csv", ("file", "tags"), rows)
    output = tmp_path / "out"
    summaries = csv_converter.convert_csv(csv_path, str(output), num_workers=1,
                                          progress=False)
    assert [summaries[split]["clips_written"] for split in splits.SPLITS] == [2, 1, 1]
    info = DatasetInfo.load(output)
    assert info.multi_label
    train = _records(output, "train")
    names = info.class_names
    assert train["b/00000001_nohash_0.wav"]["labels"].numpy().tolist() == [
        names.index("bird"), names.index("dog")]
    assert _records(output, "validation")["a/00000000_nohash_0.wav"][
        "labels"].numpy().tolist() == [names.index("cat"), names.index("dog")]

    fsd_csv, _ = _fsd50k_style(tmp_path / "fsd")
    hashed = csv_converter.convert_csv(fsd_csv, str(tmp_path / "hashed"), split_column="none",
                                       audio_dir=str(tmp_path / "fsd" / "FSD50K.dev_audio"),
                                       num_workers=1, progress=False)
    assert sorted(hashed) == sorted(splits.SPLITS)


def test_multi_label_flag_and_integer_labels(tmp_path, esc50_style):
    output = tmp_path / "out"
    csv_converter.convert_csv(esc50_style, str(output), audio_dir=str(tmp_path / "audio"),
                              label_column="target", multi_label=True, num_workers=1,
                              progress=False)
    info = DatasetInfo.load(output)
    assert info.multi_label and info.class_names == ("0", "1", "2", "3")
    assert "--label_column=target --multi_label=True" in info.converter["command"]


def test_missing_columns_are_one_line_errors(tmp_path, esc50_style):
    csv_path = _write_csv(tmp_path / "bad.csv", ("name", "tag"), [("a.wav", "dog")])
    with pytest.raises(common.ConversionError,
                       match=r"bad.csv: no path column \(looked for filename, fname, .*\): pass "
                             r"--path_column; the header has \['name', 'tag'\]"):
        csv_converter.convert_csv(csv_path, str(tmp_path / "out"))
    with pytest.raises(common.ConversionError, match=r"no label column .*--label_column"):
        csv_converter.convert_csv(csv_path, str(tmp_path / "out"), path_column="name")
    with pytest.raises(common.ConversionError,
                       match=r"esc50.csv: no column 'kind' \(--split_column\); the header has "
                             r"\['filename', 'fold', 'target', 'category'\]"):
        csv_converter.convert_csv(esc50_style, str(tmp_path / "out"), split_column="kind",
                                  audio_dir=str(tmp_path / "audio"))


@pytest.mark.parametrize("row, message", [
    (("dog/a.wav", "", "train"), r"rows.csv:3: empty label for 'dog/a.wav' \(column 'label'\)"),
    (("", "dog", "train"), r"rows.csv:3: empty path \(column 'filename'\)"),
    (("dog/a.wav", "dog", ""), r"rows.csv:3: empty split for 'dog/a.wav'"),
    (("dog/a.wav", "dog", "holdout"), r"rows.csv:3: split 'holdout' of 'dog/a.wav' \(column "
                                      r"'split'\) is not one of train, training, val"),
    (("dog/a.wav", "dog", "train", "extra"), r"rows.csv:3: 4 fields, the header has 3"),
    (("dog/b.wav", "dog", "test"), r"rows.csv:3: 'dog/b.wav' is in split 'test' here but in "
                                   r"'train' on line 2"),
])
def test_bad_rows_name_their_line(tmp_path, row, message):
    _write_clip(tmp_path / "dog" / "b.wav", ["dog"])
    csv_path = _write_csv(tmp_path / "rows.csv", ("filename", "label", "split"),
                          [("dog/b.wav", "dog", "train"), row])
    with pytest.raises(common.ConversionError, match=message):
        csv_converter.convert_csv(csv_path, str(tmp_path / "out"), progress=False)


def test_missing_files(tmp_path, capsys):
    _write_clip(tmp_path / "dog" / "b.wav", ["dog"])
    rows = [("dog/b.wav", "dog", 1)] + [(f"dog/gone{i}.wav", "dog", 1) for i in range(7)]
    csv_path = _write_csv(tmp_path / "rows.csv", ("filename", "label", "fold"), rows)
    csv_converter.convert_csv(csv_path, str(tmp_path / "out"), num_workers=1, progress=False)
    out = capsys.readouterr().out
    for line in range(3, 8):  # the first five, by line
        assert f"warning: {csv_path}:{line}: no audio file 'dog/gone{line - 3}.wav'" in out
    assert f"{csv_path}:8:" not in out
    assert "warning: 7 of 8 clips have no audio file, left out (listed in train-missing.txt)" in (
        out)
    assert len((tmp_path / "out" / "train-missing.txt").read_text().split()) == 7

    (tmp_path / "dog" / "b.wav").unlink()
    with pytest.raises(common.ConversionError,
                       match=r"rows.csv: none of its 8 files is under .* \(e.g. line 2: "
                             r"'dog/b.wav'\): is --audio_dir"):
        csv_converter.convert_csv(csv_path, str(tmp_path / "out"), overwrite=True,
                                  progress=False)


def test_a_bare_name_matching_two_files_is_an_error(tmp_path):
    _write_clip(tmp_path / "fold1" / "x.wav", ["dog"])
    _write_clip(tmp_path / "fold2" / "x.wav", ["dog"])
    csv_path = _write_csv(tmp_path / "rows.csv", ("filename", "label"), [("x.wav", "dog")])
    with pytest.raises(common.ConversionError,
                       match=r"rows.csv:2: 'x.wav' fits 2 files under .* \(fold1/x.wav, "
                             r"fold2/x.wav\): write its path relative to --audio_dir"):
        csv_converter.convert_csv(csv_path, str(tmp_path / "out"), progress=False)


def test_labels_in_one_split_only_are_named(tmp_path, capsys):
    rows = []
    for index in range(6):
        for label in ("dog", "cat"):
            _write_clip(tmp_path / label / f"{index}.wav", [label])
            rows.append((f"{label}/{index}.wav", label, "test" if index == 5 else "train"))
    _write_clip(tmp_path / "rain" / "0.wav", ["rain"])
    _write_clip(tmp_path / "bird" / "0.wav", ["bird"])
    rows += [("rain/0.wav", "rain", "train"), ("bird/0.wav", "bird", "test")]
    csv_path = _write_csv(tmp_path / "rows.csv", ("filename", "label", "split"), rows)
    csv_converter.convert_csv(csv_path, str(tmp_path / "out"), num_workers=1, progress=False)
    out = capsys.readouterr().out
    assert ("warning: 1 classes have clips in split 'train' only (no other split can train or "
            "test them): rain") in out
    assert "warning: 1 classes have clips in split 'test' only" in out and ": bird" in out
    assert splits.lonely_classes({"train": [(0,), (1, 2)], "test": [(0,)]},
                                 ["a", "b", "c", "d"]) == {"train": ["b", "c"], None: ["d"]}
    assert splits.lonely_classes({"train": [(0,), (1,)], "test": []}, ["a", "b"]) == {}


def test_stdlib_csv_is_not_shadowed():
    assert csv_converter.csv is csv and csv.reader and csv_converter.__name__ == (
        "tfrecords_tools.csv")


def test_help_lists_the_flags():
    values = flags.FlagValues()
    cli.define_flags(csv_converter.CsvConversion, values)
    assert {"csv", "audio_dir", "path_column", "label_column", "split_column",
            "label_separators", "multi_label", "validation_percent", "test_percent",
            "output_dir", "num_workers", "overwrite"} <= set(values)
    assert "slice_file_name" in values["path_column"].help


def test_cli(tmp_path, esc50_style):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "tfrecords_tools.csv", f"--csv={esc50_style}",
               f"--audio_dir={tmp_path / 'audio'}", f"--output_dir={tmp_path / 'out'}",
               "--num_workers=2"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr
    assert "clips per fold: 1: 4, 2: 4, 3: 4" in result.stdout
    assert "[train] wrote 12 clips" in result.stdout
    assert DatasetInfo.load(tmp_path / "out").num_clips("train") == 12

    result = subprocess.run(command[:3] + [f"--csv={esc50_style}", "--label_column=kind",
                                           f"--output_dir={tmp_path / 'other'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and (
        "no column 'kind' (--label_column)" in result.stderr)
