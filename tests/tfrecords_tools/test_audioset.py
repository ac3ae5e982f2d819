"""AudioSet converter: CSV parsing, file name matching, labels on the real 527-class list."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data import schema
from keras_astpe.data.dataset_info import DatasetInfo
from tfrecords_tools import audioset, common

pytestmark = pytest.mark.backend_agnostic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_LABELS = os.path.join(ROOT, "keras_astpe", "data", "audioset_class_labels_indices.csv")
COMMENTS = ("# Segments csv created Sun Mar  5 10:54:31 2017\n"
            "# num_ytids=22160, num_segs=22160, num_unique_labels=527, "
            "num_positive_labels=52882\n"
            "# YTID, start_seconds, end_seconds, positive_labels\n")

# YTID -> (start, end, MIDs, expected label indices in the real class list)
TRAIN = {
    "--PJHxphWEs": (30.0, 40.0, "/m/09x0r,/t/dd00088", [0, 451]),
    "-0SdAVK79lg": (30.0, 40.0, "/m/05zppz,/m/02zsn", [1, 2]),
    "ab_cd-ef_gh": (0.0, 10.0, "/m/03kmc9", [396]),
    "Yabcdefghij": (20.0, 30.0, "/m/02fs_r", [481]),
    "0123456789_": (250.0, 260.0, "/m/0395lw,/m/xxxxx", [200]),
    "unknownOnly": (10.0, 20.0, "/m/xxxxx,/m/yyyyy", None),
    "stereo44100": (0.0, 10.0, "/m/07qjznt", [407]),
    "fullVideo12": (10.0, 20.0, "/m/07qc9xj", [491]),
    "corruptFile": (0.0, 10.0, "/m/09x0r", [0]),
    "otherStart0": (30.0, 40.0, "/m/09x0r", [0]),
    "neverLoaded": (0.0, 10.0, "/m/09x0r", [0]),
}
EVAL = {
    "-evalClip01": (5.0, 15.0, "/m/09x0r", [0]),
    "-evalClip02": (0.0, 10.0, "/m/0ytgt", [3]),
}


def _segments_csv(segments):
    return COMMENTS + "".join(f'{ytid}, {start:.3f}, {end:.3f}, "{mids}"\n'
                              for ytid, (start, end, mids, _) in segments.items())


def _tone(seconds, sr, freq=440.0, channels=1):
    x = 0.4 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def audioset_dir(tmp_path):
    root = tmp_path / "audioset"
    audio = root / "audio"
    (audio / "balanced_train").mkdir(parents=True)
    (audio / "eval" / "more").mkdir(parents=True)
    shutil.copyfile(REAL_LABELS, root / "class_labels_indices.csv")
    # The real 527-class label file; the real segment line format with a fake comment line.
    (root / "balanced_train_segments.csv").write_text(_segments_csv(TRAIN))
    (root / "eval_segments.csv").write_text(_segments_csv(EVAL))
    train = audio / "balanced_train"
    sf.write(train / "--PJHxphWEs.wav", _tone(10, 16000), 16000)
    sf.write(train / "-0SdAVK79lg_30.flac", _tone(10, 22050), 22050)
    sf.write(train / "ab_cd-ef_gh_0.000_10.000.ogg", _tone(10, 44100), 44100, format="OGG",
             subtype="VORBIS")
    sf.write(train / "YYabcdefghij.wav", _tone(10, 16000), 16000)  # PANNs' naming
    sf.write(audio / "0123456789__250.000.wav", _tone(10, 16000), 16000)  # not in a split dir
    sf.write(train / "stereo44100.flac", _tone(10, 44100, channels=2), 44100)
    # A whole 30 s recording: 440 Hz except 880 Hz in the segment 10-20 s.
    full = np.concatenate([_tone(10, 16000), _tone(10, 16000, 880.0), _tone(10, 16000)])
    sf.write(train / "fullVideo12.wav", full, 16000)
    (train / "corruptFile.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    sf.write(train / "otherStart0_100.wav", _tone(10, 16000), 16000)  # another segment
    sf.write(train / "unknownOnly.wav", _tone(10, 16000), 16000)
    sf.write(train / "notAnId.wav", _tone(1, 16000), 16000)
    sf.write(audio / "eval" / "-evalClip01_5.mp3", _tone(10, 44100), 44100)
    sf.write(audio / "eval" / "more" / "-evalClip02.wav", _tone(10, 16000), 16000)
    sf.write(audio / "-evalClip02.flac", _tone(10, 16000), 16000)  # same clip, outside eval/
    return root


def _records(output_dir, split):
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*-of-*.tfrecord"))
    return {example["clip_id"].numpy().decode(): example
            for example in tf.data.TFRecordDataset(files).map(schema.decode_example)}


def test_real_class_list_parsing():
    rows = audioset.read_class_labels(REAL_LABELS)
    assert len(rows) == 527
    assert rows[0] == (0, "/m/09x0r", "Speech")
    assert rows[1] == (1, "/m/05zppz", "Male speech, man speaking")
    assert rows[481] == (481, "/m/02fs_r", "Beep, bleep")
    assert rows[-1][0] == 526


def test_segment_parsing(tmp_path):
    path = tmp_path / "segments.csv"
    path.write_text(COMMENTS + '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
                    '-0SdAVK79lg, 0.000, 10.000, "/m/05zppz"\n\n')
    assert audioset.read_segments(path) == [
        audioset.Segment("--PJHxphWEs", 30.0, 40.0, ("/m/09x0r", "/t/dd00088")),
        audioset.Segment("-0SdAVK79lg", 0.0, 10.0, ("/m/05zppz",))]
    path.write_text(COMMENTS + "--PJHxphWEs, 30.000\n")
    with pytest.raises(common.ConversionError, match=":4:"):
        audioset.read_segments(path)


@pytest.mark.parametrize("name, expected", [
    ("--PJHxphWEs.wav", ("--PJHxphWEs", None, None)),
    ("--PJHxphWEs_30.flac", ("--PJHxphWEs", 30.0, None)),
    ("--PJHxphWEs_30.000.mp3", ("--PJHxphWEs", 30.0, None)),
    ("--PJHxphWEs_30.000_40.000.m4a", ("--PJHxphWEs", 30.0, 40.0)),
    ("--PJHxphWEs_30_40.ogg", ("--PJHxphWEs", 30.0, 40.0)),
    ("Y--PJHxphWEs.wav", ("--PJHxphWEs", None, None)),
    ("ab_cd-ef_gh_0.wav", ("ab_cd-ef_gh", 0.0, None)),
    ("Yabcdefghij.wav", ("Yabcdefghij", None, None)),
    ("YYabcdefghij_20.wav", ("Yabcdefghij", 20.0, None)),
    ("--PJHxphWEs_abc.wav", None),
    ("--PJHxphWEsX.wav", None),
    ("zzzzzzzzzzz.wav", None),
])
def test_file_names(name, expected):
    known = {"--PJHxphWEs", "ab_cd-ef_gh", "Yabcdefghij"}
    assert audioset.parse_clip_name(name, known) == expected


def test_convert_audioset(tmp_path, audioset_dir):
    output = tmp_path / "out"
    summaries = audioset.convert_audioset(
        str(audioset_dir), str(output), audio_dir=str(audioset_dir / "audio"),
        splits=["balanced_train", "eval"], shard_mb=0.7, num_workers=2, progress=False)
    train = summaries["balanced_train"]
    assert train["segments"] == len(TRAIN)
    assert train["clips_written"] == 7
    assert train["skipped_by_reason"] == {"no_known_labels": 1, "unreadable": 1}
    assert train["missing"] == 2 and train["missing_with_files_of_other_times"] == 1
    assert (output / "balanced_train-missing.txt").read_text() == "neverLoaded\notherStart0\n"
    assert train["unknown_mids"] == {"/m/xxxxx": 2, "/m/yyyyy": 1}
    assert train["num_classes"] == 527 and train["num_shards"] == 4
    assert train["label_counts"][0] == train["label_counts"][451] == 1
    assert sum(train["label_counts"]) == 9
    assert (output / "class_labels_indices.csv").read_bytes() == open(REAL_LABELS, "rb").read()

    records = _records(output, "balanced_train")
    for ytid, (_, _, _, labels) in TRAIN.items():
        if ytid in records:
            assert records[ytid]["labels"].numpy().tolist() == labels
            assert records[ytid]["waveform"].shape == (160000,)
            assert int(records[ytid]["fold"]) == schema.NO_FOLD
    assert int(records["stereo44100"]["original_sample_rate"]) == 44100
    segment = records["fullVideo12"]["waveform"].numpy()
    assert np.argmax(np.abs(np.fft.rfft(segment))) / 10 == pytest.approx(880.0, abs=0.5)
    assert float(records["fullVideo12"]["duration"]) == 10.0

    evaluation = summaries["eval"]
    assert evaluation["clips_written"] == 2 and evaluation["segments_with_several_files"] == 1
    eval_records = _records(output, "eval")
    assert sorted(eval_records) == ["-evalClip01", "-evalClip02"]
    assert int(eval_records["-evalClip02"]["original_sample_rate"]) == 16000
    assert eval_records["-evalClip02"]["labels"].numpy().tolist() == [3]
    with open(output / "eval-summary.json") as f:
        assert json.load(f)["shards"] == ["eval-00000-of-00001.tfrecord"]


def test_split_folder_is_preferred(audioset_dir):
    files, _ = audioset.index_audio_files(audioset_dir / "audio", set(EVAL))
    segment = audioset.Segment("-evalClip02", 0.0, 10.0, ("/m/0ytgt",))
    chosen = audioset.match_files(segment, files["-evalClip02"], "eval")
    assert [os.path.basename(c.path) for c in chosen] == ["-evalClip02.wav", "-evalClip02.flac"]


def test_missing_segment_list_is_an_error(tmp_path, audioset_dir):
    with pytest.raises(common.ConversionError, match="unbalanced_train_segments.csv"):
        audioset.convert_audioset(str(audioset_dir), str(tmp_path / "out"),
                                  splits=["unbalanced_train"])


def test_cli(tmp_path, audioset_dir):
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.audioset", f"--input_dir={audioset_dir}",
         f"--output_dir={output}", "--splits=eval", "--num_workers=1"],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr
    assert "[eval] wrote 2 clips" in result.stdout
    assert sorted(_records(output, "eval")) == ["-evalClip01", "-evalClip02"]
    assert not (output / "balanced_train-summary.json").exists()


def test_splits_converted_in_separate_runs_accumulate_in_dataset_json(tmp_path,
                                                                       audioset_dir):
    output = tmp_path / "out"
    for split in ("eval", "balanced_train"):
        audioset.convert_audioset(str(audioset_dir), str(output), splits=[split],
                                  audio_dir=str(audioset_dir / "audio"), num_workers=1,
                                  progress=False)
    info = DatasetInfo.load(output)
    assert (info.kind, info.multi_label, info.clip_seconds, info.num_classes) == (
        "audioset", True, 10.0, 527)
    assert info.class_names[481] == "Beep, bleep"
    assert info.splits_with_role("train") == ["balanced_train"]
    assert info.splits_with_role("eval") == ["eval"]
    assert (info.num_clips("eval"), info.num_clips("balanced_train")) == (2, 7)
    assert "--splits=balanced_train" in info.splits["balanced_train"].command
    assert "--splits=eval" in info.splits["eval"].command
    for split in ("eval", "balanced_train"):
        paths = info.split_files(split)
        assert info.splits[split].num_bytes == [os.path.getsize(p) for p in paths]
        assert sum(info.splits[split].num_records) == info.num_clips(split)
    with pytest.raises(FileNotFoundError, match=r"--splits=unbalanced_train"):
        info.split_files("unbalanced_train")


def test_a_byte_order_mark_is_read_as_such(tmp_path, audioset_dir):
    for name in ("class_labels_indices.csv", "eval_segments.csv"):
        path = audioset_dir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summaries = audioset.convert_audioset(str(audioset_dir), str(tmp_path / "out"),
                                          splits=["eval"], num_workers=1, progress=False)
    assert summaries["eval"]["clips_written"] == 2
    assert audioset.read_class_labels(audioset_dir / "class_labels_indices.csv")[0] == (
        0, "/m/09x0r", "Speech")


def test_a_row_with_too_few_fields_is_an_error_naming_the_line(audioset_dir):
    path = audioset_dir / "class_labels_indices.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = "2,/m/02zsn\n"
    path.write_text("".join(lines))
    with pytest.raises(common.ConversionError,
                       match=r"class_labels_indices\.csv:4: 2 fields, the header has 3 "
                             r"\(index,mid,display_name\)"):
        audioset.read_class_labels(path)


def test_a_symlink_loop_is_followed_once(audioset_dir, capsys):
    audio = audioset_dir / "audio"
    (audio / "eval" / "loop").symlink_to(audio, target_is_directory=True)
    files, _ = audioset.index_audio_files(audio, set(EVAL))
    assert sorted(os.path.basename(f.path) for f in files["-evalClip02"]) == [
        "-evalClip02.flac", "-evalClip02.wav"]
    assert "reached again through a symlink" in capsys.readouterr().out
