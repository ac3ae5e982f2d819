"""Folder-per-class converter on a Speech Commands v2 layout."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data import schema
from keras_astpe.data.dataset_info import DatasetInfo
from tfrecords_tools import common, folder

pytestmark = pytest.mark.backend_agnostic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ["no", "up", "yes"]


@pytest.fixture
def speech_commands(tmp_path):
    """3 words x 4 speakers of 1 s at 16 kHz, a noise folder, and the two split lists."""
    root = tmp_path / "speech_commands_v0.02"
    for label, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for speaker in range(4):
            x = 0.3 * np.sin(2 * np.pi * 200 * (label + 1) * np.arange(16000) / 16000)
            sf.write(root / word / f"{speaker:08x}_nohash_0.wav", x, 16000, subtype="PCM_16")
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav",
             np.random.default_rng(0).uniform(-0.1, 0.1, 16000 * 3), 16000)
    (root / "README.md").write_text("not audio\n")
    (root / "up" / "00000003_nohash_0.wav").write_bytes(b"RIFF\x00\x00")
    (root / "validation_list.txt").write_text(
        "no/00000000_nohash_0.wav\nyes/00000000_nohash_0.wav\nyes/deadbeef_nohash_0.wav\n")
    (root / "testing_list.txt").write_text(
        "no/00000001_nohash_0.wav\nup/00000001_nohash_0.wav\nup/00000001_nohash_0.wav\n")
    return root


def _records(output_dir, split):
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*-of-*.tfrecord"))
    return {example["clip_id"].numpy().decode(): example
            for example in tf.data.TFRecordDataset(files).map(schema.decode_example)}


def test_convert_folder(tmp_path, speech_commands):
    output = tmp_path / "out"
    summaries = folder.convert_folder(str(speech_commands), str(output), shard_mb=0.1,
                                      num_workers=2, progress=False)
    assert sorted(summaries) == ["test", "train", "validation"]
    assert common.read_class_names(output / "classes.csv") == WORDS
    assert summaries["validation"]["clips_written"] == 2
    assert summaries["validation"]["missing"] == 1
    assert (output / "validation-missing.txt").read_text() == "yes/deadbeef_nohash_0.wav\n"
    assert summaries["test"]["clips_written"] == 2
    assert summaries["train"]["clips_written"] == 7
    assert summaries["train"]["skipped_by_reason"] == {"unreadable": 1}
    assert summaries["train"]["num_shards"] == 3

    train = _records(output, "train")
    assert "up/00000003_nohash_0.wav" not in train
    assert not any(clip.startswith("_background_noise_") for clip in train)
    assert set(_records(output, "test")) == {"no/00000001_nohash_0.wav",
                                              "up/00000001_nohash_0.wav"}
    for split in ("train", "validation", "test"):
        for clip_id, example in _records(output, split).items():
            label = WORDS.index(clip_id.split("/")[0])
            assert example["labels"].numpy().tolist() == [label]
            assert int(example["fold"]) == schema.NO_FOLD
            waveform = example["waveform"].numpy()
            assert waveform.shape == (16000,)
            assert np.argmax(np.abs(np.fft.rfft(waveform))) == pytest.approx(200 * (label + 1),
                                                                             abs=1)


def test_without_lists_everything_is_train(tmp_path, speech_commands):
    (speech_commands / "validation_list.txt").unlink()
    (speech_commands / "testing_list.txt").unlink()
    summaries = folder.convert_folder(str(speech_commands), str(tmp_path / "out"),
                                      num_workers=1, progress=False)
    assert list(summaries) == ["train"] and summaries["train"]["clips_written"] == 11


def test_overlapping_lists_are_an_error(tmp_path, speech_commands):
    (speech_commands / "testing_list.txt").write_text("no/00000000_nohash_0.wav\n")
    with pytest.raises(common.ConversionError, match="both"):
        folder.convert_folder(str(speech_commands), str(tmp_path / "out"))


def test_cli(tmp_path, speech_commands):
    output = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.folder", f"--input_dir={speech_commands}",
         f"--output_dir={output}", "--num_workers=2"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # TensorFlow's start-up lines stay quiet, in the workers too (a user's shell).
    assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr
    assert "[train] wrote 7 clips" in result.stdout
    assert "[validation] wrote 2 clips" in result.stdout
    assert len(_records(output, "test")) == 2


def test_dataset_json_has_the_roles_and_the_clip_length(tmp_path, speech_commands):
    output = tmp_path / "out"
    folder.convert_folder(str(speech_commands), str(output), num_workers=1, progress=False)
    info = DatasetInfo.load(output)
    assert (info.name, info.kind, info.multi_label) == ("speech_commands_v0.02", "folder",
                                                        False)
    assert info.class_names == tuple(WORDS)
    assert info.clip_seconds == 1.0  # the most common duration
    assert [info.splits_with_role(role) for role in ("train", "validation", "test")] == [
        ["train"], ["validation"], ["test"]]
    assert [info.num_clips(split) for split in ("train", "validation", "test")] == [7, 2, 2]
    assert info.clips_per_fold("train") == {}
    given = tmp_path / "given"
    folder.convert_folder(str(speech_commands), str(given), clip_seconds=2.5, num_workers=1,
                          progress=False)
    assert DatasetInfo.load(given).clip_seconds == 2.5
    assert "--clip_seconds=2.5" in DatasetInfo.load(given).converter["command"]


def test_symlinks_take_each_real_file_once_in_its_own_class(tmp_path, speech_commands,
                                                            capsys):
    """A folder linked into itself (a loop), a class folder linked into another class, and
    a file linked into another class: every real file once, in the class it is in."""
    (speech_commands / "yes" / "loop").symlink_to("..", target_is_directory=True)
    (speech_commands / "no" / "up_too").symlink_to("../up", target_is_directory=True)
    (speech_commands / "no" / "yes_copy.wav").symlink_to("../yes/00000002_nohash_0.wav")
    summaries = folder.convert_folder(str(speech_commands), str(tmp_path / "out"),
                                      num_workers=1, progress=False)
    assert summaries["train"]["clips_written"] == 7  # as without the links
    train = _records(tmp_path / "out", "train")
    assert not any("loop" in clip or "up_too" in clip or "copy" in clip for clip in train)
    assert summaries["train"]["symlink_repeats"] == {
        "folders": [["no/up_too", "up"], ["yes/loop", "."]], "files": 1}
    assert summaries["train"]["skipped_by_reason"] == {"same_file": 1, "unreadable": 1}
    output = capsys.readouterr().out
    assert "2 folders under" in output and "no/up_too -> up" in output
    assert "1 audio files are reached again through a symlink" in output


def test_split_lists_with_a_byte_order_mark(tmp_path, speech_commands):
    path = speech_commands / "validation_list.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summaries = folder.convert_folder(str(speech_commands), str(tmp_path / "out"),
                                      num_workers=1, progress=False)
    assert summaries["validation"]["clips_written"] == 2
