"""convert_split: sharding, parallel decoding, skip reports, summary, resuming, overwrite."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data import dataset_info, schema
from tfrecords_tools import common

pytestmark = pytest.mark.backend_agnostic

CLASSES = ["tone", "noise", "silence"]
SPLIT = "train"
DATASET = common.DatasetDescription(name="test", kind="folder", class_names=tuple(CLASSES),
                                    multi_label=False, clip_seconds=None,
                                    command="python -m tfrecords_tools.folder --input_dir=x")


def _read_split(output_dir, split=SPLIT):
    summary = json.loads((output_dir / f"{split}-summary.json").read_text())
    files = [str(output_dir / name) for name in summary["shards"]]
    records = {}
    for file in files:
        for example in tf.data.TFRecordDataset(file).map(schema.decode_example):
            records[example["clip_id"].numpy().decode()] = {
                key: value.numpy() for key, value in example.items()}
    return summary, records


def _skipped(output_dir, split=SPLIT):
    with open(output_dir / f"{split}-skipped.csv", newline="") as f:
        return {row["clip_id"]: row for row in csv.DictReader(f)}


def _shard_stats(output_dir, split=SPLIT):
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_ino)
            for path in output_dir.glob(f"{split}-*-of-*.tfrecord")}


@pytest.fixture
def dataset(tmp_path):
    """12 good clips (44.1 kHz mono, 16 kHz stereo) + a corrupt, an empty, a NaN file."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    items = []
    for i in range(12):
        sr, channels = (44100, 1) if i % 2 else (16000, 2)
        x = (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(sr) / sr)).astype(np.float32)
        if channels == 2:
            x = np.stack([x, x], axis=1)
        path = audio / f"clip{i:02d}.{'flac' if i % 3 else 'wav'}"
        sf.write(path, x, sr)
        items.append(common.WorkItem(str(path), f"clip{i:02d}", (i % 3,), fold=i % 5 + 1,
                                     expected_seconds=1.0))
    (audio / "corrupt.wav").write_bytes(rng.bytes(3000))
    (audio / "empty.wav").write_bytes(b"")
    nan = np.zeros(1000, np.float32)
    nan[10] = np.nan
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    for name in ("corrupt.wav", "empty.wav", "nan.wav"):
        items.append(common.WorkItem(str(audio / name), name.split(".")[0], (0,),
                                     expected_seconds=1.0))
    return items


def _convert(items, output_dir, **kwargs):
    kwargs = {"shard_mb": 0.1, "num_workers": 2, "progress": False, "split": SPLIT,
              "role": "train", "dataset": DATASET, **kwargs}
    return common.convert_split(items, output_dir=str(output_dir), **kwargs)


def test_assign_shards_is_deterministic_and_sized():
    items = [common.WorkItem(f"{i}.wav", str(i), (0,), expected_seconds=1.0) for i in range(10)]
    # 1 s at 16 kHz 16-bit = 32 kB (+ overhead): 3 per 0.1 MB shard.
    shards = common.assign_shards(items, 0.1)
    assert [len(shard) for shard in shards] == [3, 3, 3, 1]
    assert [item for shard in shards for item in shard] == items
    assert common.assign_shards(items, 0.1) == shards
    assert len(common.assign_shards(items, 150)) == 1
    with pytest.raises(ValueError):
        common.assign_shards(items, 0)


def test_convert_writes_shards_reports_and_summary(tmp_path, dataset):
    output = tmp_path / "out"
    summary = _convert(dataset, output, missing=["lost1", "lost0"],
                       skipped=[common.Skipped("x.wav", "x", "no_known_labels", "no label")])
    assert summary["num_shards"] == 5
    assert sorted(os.listdir(output)) == sorted(
        [common.shard_name(SPLIT, i, 5) for i in range(5)] + ["dataset.json"]
        + [f"{SPLIT}-{name}" for name in ("manifest.json", "missing.txt", "skipped.csv",
                                          "clipped.csv", "summary.json")])
    summary, records = _read_split(output)
    assert sorted(records) == [f"clip{i:02d}" for i in range(12)]
    assert summary["clips_written"] == 12
    assert summary["skipped_by_reason"] == {"empty": 1, "no_known_labels": 1, "non_finite": 1,
                                            "unreadable": 1}
    assert summary["skipped"] == 4 and summary["missing"] == 2
    assert summary["total_duration_seconds"] == pytest.approx(12.0)
    assert summary["label_counts"] == [4, 4, 4] and summary["class_names"] == CLASSES
    assert (output / f"{SPLIT}-missing.txt").read_text() == "lost0\nlost1\n"
    skipped = _skipped(output)
    assert {clip: row["reason"] for clip, row in skipped.items()} == {
        "corrupt": "unreadable", "empty": "empty", "nan": "non_finite", "x": "no_known_labels"}
    assert skipped["corrupt"]["path"].endswith("corrupt.wav") and skipped["corrupt"]["message"]

    for i in range(12):
        record = records[f"clip{i:02d}"]
        assert list(record["labels"]) == [i % 3] and record["fold"] == i % 5 + 1
        assert record["original_sample_rate"] == (44100 if i % 2 else 16000)
        assert record["duration"] == pytest.approx(1.0)
        waveform = record["waveform"]
        assert waveform.shape == (16000,)
        spectrum = np.abs(np.fft.rfft(waveform))
        assert np.argmax(spectrum) == pytest.approx(200 + 100 * i, abs=1)
        assert np.max(np.abs(waveform[1000:-1000])) == pytest.approx(0.3, abs=0.01)


def test_in_process_and_parallel_output_are_identical(tmp_path, dataset):
    _convert(dataset, tmp_path / "a", num_workers=1)
    _convert(dataset, tmp_path / "b", num_workers=2)
    names = sorted(_shard_stats(tmp_path / "a"))
    assert names == sorted(_shard_stats(tmp_path / "b"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_rerun_rewrites_nothing(tmp_path, dataset):
    output = tmp_path / "out"
    _convert(dataset, output)
    before = _shard_stats(output)
    summary = _convert(dataset, output)
    assert _shard_stats(output) == before
    assert summary["clips_written"] == 12 and summary["skipped"] == 3


def test_resume_after_a_killed_run(tmp_path, dataset):
    """A run killed mid-shard leaves a .partial file and a manifest without that shard."""
    output = tmp_path / "out"
    _convert(dataset, output)
    complete = {name: (output / name).read_bytes() for name in _shard_stats(output)}
    manifest_path = output / f"{SPLIT}-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    lost, truncated = common.shard_name(SPLIT, 3, 5), common.shard_name(SPLIT, 1, 5)
    del manifest["completed"][lost]
    manifest_path.write_text(json.dumps(manifest))
    (output / lost).unlink()
    (output / f".tmp-{lost}-x1y2z3.tfrecord").write_bytes(complete[lost][:100])
    (output / f".tmp-{SPLIT}-manifest.json-a1b2c3.json").write_text('{"half": ')
    # A shard file cut short after the manifest recorded it is not trusted either.
    (output / truncated).write_bytes(complete[truncated][:-10])
    before = _shard_stats(output)

    summary = _convert(dataset, output)
    after = _shard_stats(output)
    assert not list(output.glob(".tmp*"))
    assert {name for name in after if after[name] != before.get(name)} == {lost, truncated}
    assert {name: (output / name).read_bytes() for name in after} == complete
    assert summary["clips_written"] == 12 and summary["skipped"] == 3


def test_other_inputs_need_overwrite(tmp_path, dataset):
    output = tmp_path / "out"
    _convert(dataset, output)
    with pytest.raises(common.ConversionError, match="--overwrite"):
        _convert(dataset[:6], output)
    with pytest.raises(common.ConversionError, match="--overwrite"):
        _convert(dataset, output, shard_mb=1.0)
    summary = _convert(dataset[:6], output, shard_mb=1.0, overwrite=True)
    assert summary["num_shards"] == 1
    assert sorted(_shard_stats(output)) == [common.shard_name(SPLIT, 0, 1)]
    _, records = _read_split(output)
    assert len(records) == 6


def test_stray_shards_without_manifest_are_not_overwritten(tmp_path, dataset):
    output = tmp_path / "out"
    output.mkdir()
    (output / common.shard_name(SPLIT, 0, 2)).write_bytes(b"someone else's")
    with pytest.raises(common.ConversionError, match="no manifest"):
        _convert(dataset, output)


def test_segment_is_cut_from_a_longer_recording(tmp_path):
    sr = 22050
    # 30 s: 300 Hz, then 700 Hz from 10 s to 20 s, then 300 Hz.
    t = np.arange(30 * sr) / sr
    freq = np.where((t >= 10) & (t < 20), 700.0, 300.0)
    sf.write(tmp_path / "long.wav", 0.5 * np.sin(2 * np.pi * freq * t), sr)
    sf.write(tmp_path / "short.wav", 0.5 * np.sin(2 * np.pi * 500 * t[:10 * sr]), sr)
    items = [common.WorkItem(str(tmp_path / "long.wav"), "long", (0,), segment=(10.0, 20.0)),
             common.WorkItem(str(tmp_path / "short.wav"), "short", (1,), segment=(30.0, 40.0)),
             common.WorkItem(str(tmp_path / "long.wav"), "late", (2,), segment=(40.0, 50.0))]
    summary = _convert(items, tmp_path / "out", shard_mb=150, num_workers=1)
    _, records = _read_split(tmp_path / "out")
    for clip, freq in (("long", 700), ("short", 500)):
        waveform = records[clip]["waveform"]
        assert waveform.shape == (10 * 16000,) and records[clip]["duration"] == 10.0
        assert np.argmax(np.abs(np.fft.rfft(waveform))) / 10 == pytest.approx(freq, abs=1)
    assert summary["skipped_by_reason"] == {"segment_out_of_range": 1}


def test_bad_items_are_rejected(tmp_path):
    item = common.WorkItem("a.wav", "a", (0,))
    with pytest.raises(common.ConversionError, match="duplicate"):
        _convert([item, item], tmp_path)
    with pytest.raises(common.ConversionError, match="outside"):
        _convert([common.WorkItem("a.wav", "a", (3,))], tmp_path)


def test_empty_split(tmp_path):
    summary = _convert([], tmp_path, missing=["a"])
    assert summary["num_shards"] == 0 and summary["clips_written"] == 0
    assert summary["missing"] == 1 and summary["label_counts"] == [0, 0, 0]


def test_class_lists_round_trip(tmp_path):
    names = ["dog", "Beep, bleep", 'say "hi"']
    common.write_classes_csv(tmp_path / "classes.csv", names)
    assert dataset_info.read_class_names(tmp_path / "classes.csv") == names
    real = os.path.join(os.path.dirname(schema.__file__), "audioset_class_labels_indices.csv")
    audioset = dataset_info.read_class_names(real)
    assert len(audioset) == 527 and audioset[1] == "Male speech, man speaking"


def test_samples_beyond_full_scale_are_clipped_and_reported(tmp_path, capsys):
    """A float WAV at twice full scale (two thirds of its samples clipped) and one just
    over."""
    t = np.arange(16000) / 16000
    loud = (2.0 * np.sin(2 * np.pi * 100 * t)).astype(np.float32)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    slightly = np.full(16000, 0.5, np.float32)
    slightly[[10, 20]] = 1.01
    sf.write(tmp_path / "slightly.wav", slightly, 16000, subtype="FLOAT")
    sf.write(tmp_path / "clean.wav", 0.25 * loud, 16000, subtype="FLOAT")
    items = [common.WorkItem(str(tmp_path / f"{name}.wav"), name, (0,), expected_seconds=1.0)
             for name in ("loud", "slightly", "clean")]
    summary = _convert(items, tmp_path / "out", num_workers=1)
    expected = int(np.count_nonzero(np.abs(np.round(loud * 32767.0)) > 32767))
    assert 0.6 < expected / loud.size < 0.7
    assert summary["clipped"] == {"clips": 2, "samples": expected + 2}
    with open(tmp_path / "out" / f"{SPLIT}-clipped.csv", newline="") as f:
        rows = {row["clip_id"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["loud", "slightly"]
    assert int(rows["loud"]["clipped_samples"]) == expected
    assert int(rows["loud"]["samples"]) == 16000
    assert float(rows["loud"]["peak"]) == pytest.approx(2.0, abs=1e-3)
    assert rows["slightly"]["clipped_samples"] == "2"
    printed = capsys.readouterr().out
    assert f"2 clips exceed full scale: {expected + 2} samples clipped to 16 bit (worst: " \
           f"loud, 66% of its samples, peak 2)" in printed
    _, records = _read_split(tmp_path / "out")
    assert np.abs(records["loud"]["waveform"]).max() == pytest.approx(1.0, abs=1e-4)


def test_dataset_json_accumulates_splits_and_refuses_another_dataset(tmp_path, dataset):
    output = tmp_path / "out"
    _convert(dataset[:4], output)
    _convert(dataset[4:8], output, split="eval", role="eval")
    content = json.loads((output / "dataset.json").read_text())
    assert sorted(content["splits"]) == ["eval", "train"]
    assert (content["splits"]["eval"]["role"], content["splits"]["eval"]["num_clips"]) == (
        "eval", 4)
    assert content["clip_seconds"] == 1.0 and content["class_names"] == CLASSES
    other = dataclasses.replace(DATASET, class_names=("x", "y", "z"))
    with pytest.raises(common.ConversionError,
                       match=r"holds another dataset \('test', of other class_names\): pass "
                             r"--overwrite"):
        _convert(dataset[:4], output, dataset=other)
    _convert(dataset[:4], output, dataset=other, overwrite=True)
    content = json.loads((output / "dataset.json").read_text())
    assert list(content["splits"]) == ["train"] and content["class_names"] == ["x", "y", "z"]


def test_a_split_converted_again_from_other_items_leaves_dataset_json(tmp_path, dataset,
                                                                     monkeypatch):
    """Its old shards are deleted: dataset.json lists it again only once it is complete."""
    output = tmp_path / "out"
    _convert(dataset[:4], output)
    _convert(dataset[4:6], output, split="eval", role="eval")
    decode = common._decode

    def killed(item):
        if item.clip_id == "clip03":
            raise KeyboardInterrupt
        return decode(item)

    monkeypatch.setattr(common, "_decode", killed)
    with pytest.raises(KeyboardInterrupt):
        _convert(dataset[:6], output, overwrite=True, num_workers=1)
    assert sorted(json.loads((output / "dataset.json").read_text())["splits"]) == ["eval"]
    monkeypatch.setattr(common, "_decode", decode)
    _convert(dataset[:6], output, overwrite=True)
    splits = json.loads((output / "dataset.json").read_text())["splits"]
    assert sorted(splits) == ["eval", "train"] and splits["train"]["num_clips"] == 6


def test_written_files_respect_the_umask(tmp_path, dataset):
    previous = os.umask(0o022)
    try:
        _convert(dataset[:2], tmp_path / "out", num_workers=1)
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_read_csv_reads_a_byte_order_mark_and_names_short_rows(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"\xef\xbb\xbfname,value\r\na,1\r\n\r\n\"b,c\",2\r\n")
    assert common.read_csv(path, ("name",)) == [(2, {"name": "a", "value": "1"}),
                                                (4, {"name": "b,c", "value": "2"})]
    path.write_text("name,value\na,1\nb\n")
    with pytest.raises(common.ConversionError,
                       match=r"table\.csv:3: 1 fields, the header has 2 \(name,value\)"):
        common.read_csv(path, ("name",))
    path.write_text("index,category\n0,dog\n1\n")
    with pytest.raises(dataset_info.DatasetInfoError,
                       match=r"table\.csv:3: 1 fields, the header"):
        dataset_info.read_class_names(path)
    path.write_bytes(b"\xef\xbb\xbfindex,category\n0,dog\n1,cat\n")
    assert dataset_info.read_class_names(path) == ["dog", "cat"]
