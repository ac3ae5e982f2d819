"""ESC-50 converter on a small ESC-50 layout, through the Python API and the CLI."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data import dataset_info, schema
from keras_astpe.data.dataset_info import DatasetInfo
from tfrecords_tools import common, esc50

pytestmark = pytest.mark.backend_agnostic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATEGORIES = ["dog", "rooster", "rain"]
HEADER = "filename,fold,target,category,esc10,src_file,take\n"


@pytest.fixture
def esc50_dir(tmp_path):
    """15 listed clips (5 folds x 3 classes) at 44.1 kHz mono, one corrupt, one truncated,
    one listed without a file."""
    root = tmp_path / "ESC-50-master"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = []
    for fold in range(1, 6):
        for target, category in enumerate(CATEGORIES):
            name = f"{fold}-{1000 + 10 * fold + target}-A-{target}.wav"
            freq = 300.0 * (target + 1)
            x = 0.5 * np.sin(2 * np.pi * freq * np.arange(5 * 44100) / 44100)
            sf.write(root / "audio" / name, x, 44100, subtype="PCM_16")
            rows.append(f"{name},{fold},{target},{category},{target == 0},"
                        f"{1000 + 10 * fold + target},A\n")
    (root / "audio" / "2-1021-A-1.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    data = (root / "audio" / "3-1030-A-0.wav").read_bytes()
    (root / "audio" / "3-1030-A-0.wav").write_bytes(data[:len(data) // 2])
    (root / "audio" / "5-1052-A-2.wav").unlink()
    (root / "meta" / "esc50.csv").write_text(HEADER + "".join(rows))
    return root


def _records(output_dir):
    files = sorted(str(p) for p in output_dir.glob("esc50-*-of-*.tfrecord"))
    return {example["clip_id"].numpy().decode(): example
            for example in tf.data.TFRecordDataset(files).map(schema.decode_example)}


def test_convert_esc50(tmp_path, esc50_dir):
    output = tmp_path / "out"
    summary = esc50.convert_esc50(str(esc50_dir), str(output), shard_mb=0.4, num_workers=2,
                                  progress=False)
    assert summary["num_shards"] == 7  # 14 files of 5 s x 32 kB/s: 2 per 0.4 MB shard
    assert summary["clips_written"] == 12 and summary["missing"] == 1
    assert summary["skipped_by_reason"] == {"truncated": 1, "unreadable": 1}
    assert summary["folds"] == [1, 2, 3, 4, 5]
    assert summary["label_counts"] == [4, 4, 4]
    assert dataset_info.read_class_names(output / "classes.csv") == CATEGORIES
    assert (output / "classes.csv").read_text().splitlines()[0] == "index,category"
    assert (output / "esc50-missing.txt").read_text() == "5-1052-A-2.wav\n"

    records = _records(output)
    assert len(records) == 12
    for clip_id, example in records.items():
        fold, _, _, target = clip_id[:-4].split("-")
        assert int(example["fold"]) == int(fold)
        assert example["labels"].numpy().tolist() == [int(target)]
        assert int(example["original_sample_rate"]) == 44100
        waveform = example["waveform"].numpy()
        assert waveform.shape == (5 * 16000,)
        peak = np.argmax(np.abs(np.fft.rfft(waveform))) / 5.0
        assert peak == pytest.approx(300.0 * (int(target) + 1), abs=0.5)


def test_bad_metadata(tmp_path, esc50_dir):
    with pytest.raises(common.ConversionError, match="meta/esc50.csv"):
        esc50.convert_esc50(str(tmp_path), str(tmp_path / "out"))
    csv_path = esc50_dir / "meta" / "esc50.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text(lines[0] + lines[1] + lines[1].replace(",dog,", ",cat,"))
    with pytest.raises(common.ConversionError, match="both"):
        esc50.convert_esc50(str(esc50_dir), str(tmp_path / "out"))
    csv_path.write_text("filename,fold,target\n")
    with pytest.raises(common.ConversionError, match=r"missing columns \['category', "):
        esc50.convert_esc50(str(esc50_dir), str(tmp_path / "out"))


def test_cli(tmp_path, esc50_dir):
    output = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "tfrecords_tools.esc50", f"--input_dir={esc50_dir}",
               f"--output_dir={output}", "--shard_mb=0.4", "--num_workers=2"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "[esc50] wrote 12 clips" in result.stdout
    assert "truncated: 1, unreadable: 1" in result.stdout
    summary = json.loads((output / "esc50-summary.json").read_text())
    assert summary["clips_written"] == 12 and summary["num_shards"] == 7
    with open(output / "esc50-skipped.csv", newline="") as f:
        reasons = {row["clip_id"]: row["reason"] for row in csv.DictReader(f)}
    assert reasons == {"2-1021-A-1.wav": "unreadable", "3-1030-A-0.wav": "truncated"}

    help_text = subprocess.run([sys.executable, "-m", "tfrecords_tools.esc50", "--help"],
                               cwd=ROOT, env=env, capture_output=True, text=True).stdout
    for flag in ("--input_dir", "--output_dir", "--shard_mb", "--num_workers", "overwrite"):
        assert flag in help_text


# Written clips per fold: 3 per fold, less the corrupt clip of fold 2, the truncated clip of
# fold 3 and the missing file of fold 5.
CLIPS_PER_FOLD = {1: 3, 2: 2, 3: 2, 4: 3, 5: 2}


def test_dataset_json_describes_the_cross_validation_split(tmp_path, esc50_dir):
    output = tmp_path / "out"
    esc50.convert_esc50(str(esc50_dir), str(output), num_workers=1, progress=False)
    info = DatasetInfo.load(output)
    assert (info.name, info.kind, info.multi_label, info.clip_seconds) == (
        "esc50", "esc50", False, 5.0)
    assert info.class_names == tuple(CATEGORIES)
    split = info.splits["esc50"]
    assert (split.role, split.cross_validation_folds) == ("train", (1, 2, 3, 4, 5))
    assert info.clips_per_fold("esc50") == CLIPS_PER_FOLD
    assert info.num_clips("esc50") == 12 and info.num_clips("esc50", folds=[2, 4]) == 5
    assert split.command.startswith(f"python -m tfrecords_tools.esc50 --input_dir={esc50_dir}")


def test_excel_csv_with_a_byte_order_mark(tmp_path, esc50_dir):
    csv_path = esc50_dir / "meta" / "esc50.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes().replace(b"\n", b"\r\n"))
    summary = esc50.convert_esc50(str(esc50_dir), str(tmp_path / "out"), num_workers=1,
                                  progress=False)
    assert summary["clips_written"] == 12


@pytest.mark.parametrize("row, message", [
    ("1-100-A-0.wav,1,0,dog,True\n", r"esc50\.csv:3: 5 fields, the header has 7"),
    ("1-100-A-0.wav,1,0,dog,True,100,A,extra\n", r"esc50\.csv:3: 8 fields, the header has 7"),
    ("6-100-A-0.wav,6,0,dog,True,100,A\n",
     r"esc50\.csv:3: fold 6 of '6-100-A-0\.wav' is not one of the ESC-50 folds 1-5"),
    ("0-100-A-0.wav,0,0,dog,True,100,A\n", r"esc50\.csv:3: fold 0 "),
])
def test_bad_rows_are_errors_naming_the_line(tmp_path, esc50_dir, row, message):
    csv_path = esc50_dir / "meta" / "esc50.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text(lines[0] + lines[1] + row + "".join(lines[2:]))
    with pytest.raises(common.ConversionError, match=message):
        esc50.convert_esc50(str(esc50_dir), str(tmp_path / "out"))


def test_cli_errors_end_in_one_line(tmp_path, esc50_dir):
    (tmp_path / "a_file").write_text("")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for output, message in ((tmp_path / "a_file", f"error: {tmp_path / 'a_file'}: File exists"),
                            (tmp_path / "a_file" / "out",
                             f"error: {tmp_path / 'a_file' / 'out'}: Not a directory")):
        result = subprocess.run(
            [sys.executable, "-m", "tfrecords_tools.esc50", f"--input_dir={esc50_dir}",
             f"--output_dir={output}", "--num_workers=1"],
            cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
