"""Folder-per-class converter on a Speech Commands v2 layout, with its split lists or split
by file-name hash; the hash split itself on names only."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data import dataset_info, pipeline, schema
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.models import LogMelAudioConverter
from tfrecords_tools import common, folder, splits

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
    assert dataset_info.read_class_names(output / "classes.csv") == WORDS
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


def _remove_lists(root):
    (root / "validation_list.txt").unlink()
    (root / "testing_list.txt").unlink()


def _add_clip(root, word, name, seconds=1.0):
    label = WORDS.index(word) if word in WORDS else len(WORDS)
    x = 0.3 * np.sin(2 * np.pi * 200 * (label + 1) * np.arange(int(16000 * seconds)) / 16000)
    (root / word).mkdir(exist_ok=True)
    sf.write(root / word / name, x, 16000, subtype="PCM_16")


def test_without_lists_splits_by_file_name_hash(tmp_path, speech_commands, capsys):
    """Speaker 00000000 falls in validation, 00000002 in test, 00000001 and 00000003 in
    train (Speech Commands' rule): each speaker's words in one split."""
    _remove_lists(speech_commands)
    output = tmp_path / "out"
    summaries = folder.convert_folder(str(speech_commands), str(output), num_workers=1,
                                      progress=False)
    expected = {"train": {f"{word}/0000000{speaker}_nohash_0.wav" for word in WORDS
                          for speaker in (1, 3)} - {"up/00000003_nohash_0.wav"},
                "validation": {f"{word}/00000000_nohash_0.wav" for word in WORDS},
                "test": {f"{word}/00000002_nohash_0.wav" for word in WORDS}}
    for split, clip_ids in expected.items():
        assert set(_records(output, split)) == clip_ids
        assert all(splits.which_split(clip_id) == split for clip_id in clip_ids)
    assert [summaries[split]["clips_written"] for split in splits.SPLITS] == [5, 3, 3]
    assert summaries["train"]["skipped_by_reason"] == {"unreadable": 1}
    assert summaries["test"]["split_rule"] == {"rule": "file-name hash",
                                               "validation_percent": 10.0,
                                               "test_percent": 10.0}
    out = capsys.readouterr().out
    assert ("split by file-name hash (validation 10%, test 10%): train 6, validation 3, "
            "test 3 clips") in out
    assert "warning" not in out

    info = DatasetInfo.load(output)
    assert info.class_names == tuple(WORDS) and not info.multi_label
    assert [info.num_clips(split) for split in splits.SPLITS] == [5, 3, 3]
    assert [info.splits_with_role(role) for role in splits.SPLITS] == [
        ["train"], ["validation"], ["test"]]
    assert "--validation_percent=10.0 --test_percent=10.0" in info.converter["command"]

    dataset = pipeline.make_dataset(
        info.split_files("validation"), num_classes=info.num_classes, batch_size=3,
        training=False, clip_samples=16000, multi_label=False, return_clip_ids=True,
        converter=LogMelAudioConverter())
    features, targets, clip_ids = next(iter(dataset))
    assert features.shape[0] == 3
    words = [clip_id.decode().split("/")[0] for clip_id in clip_ids.numpy()]
    np.testing.assert_array_equal(targets.numpy(), np.eye(3)[[WORDS.index(w) for w in words]])


def test_a_grown_folder_keeps_every_clip_in_its_split(tmp_path, speech_commands):
    """New speakers, new takes of known speakers and a new class: no clip changes split,
    and every speaker's clips share one."""
    _remove_lists(speech_commands)
    folder.convert_folder(str(speech_commands), str(tmp_path / "before"), num_workers=1,
                          progress=False)
    before = {split: set(_records(tmp_path / "before", split)) for split in splits.SPLITS}
    for word in WORDS + ["go"]:
        for speaker in range(8):
            for take in range(2):
                name = f"{speaker:08x}_nohash_{take}.wav"
                if not (speech_commands / word / name).exists():
                    _add_clip(speech_commands, word, name, seconds=0.5)
    after_dir = tmp_path / "after"
    folder.convert_folder(str(speech_commands), str(after_dir), num_workers=1,
                          progress=False)
    after = {split: set(_records(after_dir, split)) for split in splits.SPLITS}
    for split in splits.SPLITS:
        assert before[split] <= after[split]
    assert sum(map(len, after.values())) == 4 * 8 * 2 - 1  # less the unreadable file
    split_of_speaker = {}
    for split, clip_ids in after.items():
        for clip_id in clip_ids:
            speaker = clip_id.split("/")[1].split("_nohash_")[0]
            assert split_of_speaker.setdefault(speaker, split) == split
    assert DatasetInfo.load(after_dir).class_names == ("go", "no", "up", "yes")


def test_hash_split_percentages_and_a_class_in_one_split(tmp_path, speech_commands, capsys):
    _remove_lists(speech_commands)
    _add_clip(speech_commands, "rare", "00000002_nohash_0.wav")  # a test speaker only
    output = tmp_path / "out"
    summaries = folder.convert_folder(str(speech_commands), str(output), validation_percent=0,
                                      test_percent=30, num_workers=1, progress=False)
    # 00000000 (9.6%) and 00000002 (16.4%) are in test below 30%.
    assert [summaries[split]["clips_written"] for split in splits.SPLITS] == [5, 0, 7]
    out = capsys.readouterr().out
    assert "warning: 1 classes have clips in split 'test' only" in out and "rare" in out
    assert "no clip falls in the validation split" not in out  # 0% asked
    info = DatasetInfo.load(output)
    assert info.num_clips("validation") == 0
    with pytest.raises(FileNotFoundError, match="wrote no clip"):
        info.split_files("validation")
    assert "--validation_percent=0" in info.converter["command"]


def test_an_empty_class_folder_is_an_error(tmp_path, speech_commands):
    (speech_commands / "down").mkdir()
    (speech_commands / "down" / "notes.txt").write_text("no audio here\n")
    with pytest.raises(common.ConversionError,
                       match=r"down: class folder without audio files .*start its name"):
        folder.convert_folder(str(speech_commands), str(tmp_path / "out"), progress=False)


def test_bad_percentages_are_errors(tmp_path, speech_commands):
    with pytest.raises(ValueError, match=r"--validation_percent \+ --test_percent must be "
                                         r"below 100, got 60 \+ 40"):
        folder.convert_folder(str(speech_commands), str(tmp_path / "out"),
                              validation_percent=60, test_percent=40)
    with pytest.raises(ValueError, match=r"--test_percent must be in \[0, 100\), got -1"):
        splits.HashSplitOptions(test_percent=-1)


def test_which_split_is_speech_commands_rule():
    """Clips of Speech Commands v0.02's own validation_list.txt and testing_list.txt, which
    TensorFlow's `which_set` made with 10% and 10%."""
    for clip_id in ("cat/8b775397_nohash_0.wav", "go/6a27a9bf_nohash_0.wav",
                    "four/605ed0ff_nohash_0.wav", "cat/2643992f_nohash_1.wav"):
        assert splits.which_split(clip_id, 10, 10) == "validation"
    for clip_id in ("cat/2aa787cf_nohash_0.wav", "go/85834399_nohash_0.wav",
                    "four/27c30960_nohash_0.wav", "four/bb31b82b_nohash_3.wav"):
        assert splits.which_split(clip_id, 10, 10) == "test"
    assert splits.hash_name("a/b/bobby_nohash_1.wav") == "bobby"
    assert splits.hash_name("dog/bark 3.flac") == "bark 3.flac"


def test_hash_split_is_stable_groups_speakers_and_honours_the_percentages():
    names = [f"speaker{index}_nohash_{take}.wav" for index in range(300) for take in range(2)]
    names += [f"clip_{index:04d}.wav" for index in range(300)]
    first = {name: splits.which_split(name, 15, 5) for name in names[:400]}
    assert {name: splits.which_split(name, 15, 5) for name in names[:400]} == first
    grown = splits.split_by_hash(
        [common.WorkItem(path=name, clip_id=f"class/{name}", labels=(0,)) for name in names],
        15, 5)
    placed = {item.clip_id.split("/")[1]: split
              for split, items in grown.items() for item in items}
    assert all(placed[name] == split for name, split in first.items())  # nothing moved
    for index in range(300):  # a speaker's takes share a split
        assert placed[f"speaker{index}_nohash_0.wav"] == placed[f"speaker{index}_nohash_1.wav"]
    sizes = {split: len(items) / len(names) for split, items in grown.items()}
    assert sizes["validation"] == pytest.approx(0.15, abs=0.05)
    assert sizes["test"] == pytest.approx(0.05, abs=0.03)
    assert sizes["train"] == pytest.approx(0.80, abs=0.05)
    assert {split for split in map(splits.which_split, names[:50])} <= set(splits.SPLITS)
    assert all(splits.which_split(name, 0, 0) == "train" for name in names)


def test_overlapping_lists_are_an_error(tmp_path, speech_commands):
    (speech_commands / "testing_list.txt").write_text("no/00000000_nohash_0.wav\n")
    with pytest.raises(common.ConversionError, match="both"):
        folder.convert_folder(str(speech_commands), str(tmp_path / "out"))


def test_help_lists_the_split_flags():
    from absl import flags

    from keras_astpe import cli

    values = flags.FlagValues()
    cli.define_flags(folder.FolderConversion, values)
    assert {"input_dir", "validation_percent", "test_percent", "output_dir"} <= set(values)
    assert "stable hash of the file name" in values["validation_percent"].help


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
