"""DatasetInfo: what the converter recorded in dataset.json."""

import json

import pytest

from keras_astpe.data import dataset_info
from keras_astpe.data.dataset_info import DatasetInfo, DatasetInfoError

pytestmark = pytest.mark.backend_agnostic

TRAIN_FOLDS = {1: 5, 2: 5, 3: 5, 4: 5, 5: 4}  # clip k of 24 in fold k % 5 + 1


def _check_tiny(info, data_dir):
    """What tests/data/conftest.py converted."""
    assert info.class_names == ("a", "b", "c") and info.num_classes == 3
    assert info.multi_label is False and info.kind == "folder"
    assert sorted(info.splits) == ["eval", "train"]
    assert info.splits_with_role("train") == ["train"]
    assert info.splits_with_role("eval") == ["eval"]
    assert info.splits_with_role("test") == []
    train = info.splits["train"]
    assert train.role == "train" and train.cross_validation_folds == ()
    assert info.split_files("train") == [
        str(data_dir / f"train-0000{index}-of-00003.tfrecord") for index in range(3)]
    assert train.num_bytes == [27160] * 3 and train.num_records == [8] * 3
    assert info.num_clips("train") == 24 and info.num_clips("eval") == 6
    assert info.clips_per_fold("train") == TRAIN_FOLDS
    assert info.num_clips("train", folds=[1, 5]) == 9
    assert info.clips_per_fold("eval") == {1: 2, 2: 1, 3: 1, 4: 1, 5: 1}


def test_dataset_json_describes_the_conversion(converted):
    info = DatasetInfo.load(converted)
    _check_tiny(info, converted)
    assert info.name == "tiny" and info.clip_seconds == 0.1
    assert info.source == str(converted / "dataset.json")
    assert info.converter["version"] and "tfrecords_tools.folder" in info.converter["command"]
    assert info.splits["train"].command == info.converter["command"]


def test_errors_name_the_split_the_pattern_and_the_command(converted):
    info = DatasetInfo.load(converted, kind="folder")
    with pytest.raises(FileNotFoundError) as error:
        info.split_files("test")
    message = str(error.value)
    assert f"expected {converted}/test-[0-9]*-of-[0-9]*.tfrecord" in message
    assert "holds the splits ['eval', 'train']" in message
    assert "python -m tfrecords_tools.folder" in message
    with pytest.raises(ValueError, match=r"no clip in folds \[6\]"):
        info.num_clips("train", folds=[1, 6])
    with pytest.raises(ValueError, match="role must be one of"):
        info.splits_with_role("training")


def test_a_split_without_clips_has_no_files(converted):
    content = json.loads((converted / "dataset.json").read_text())
    content["splits"]["test"] = dict(content["splits"]["eval"], role="test", num_clips=0,
                                     shards=[], clips_per_fold={})
    (converted / "dataset.json").write_text(json.dumps(content))
    info = DatasetInfo.load(converted)
    assert info.splits_with_role("test") == ["test"] and info.num_clips("test") == 0
    with pytest.raises(FileNotFoundError, match=r"the converter wrote no clip .*test-missing"):
        info.split_files("test")


def test_a_damaged_dataset_json_is_a_one_line_error(converted):
    path = converted / "dataset.json"
    content = path.read_text()
    path.write_text(content[:len(content) // 2])
    with pytest.raises(DatasetInfoError, match=r"dataset\.json: not valid JSON \(") as error:
        DatasetInfo.load(converted)
    assert "\n" not in str(error.value)
    damaged = json.loads(content)
    del damaged["splits"]["train"]["shards"][1]["records"]
    path.write_text(json.dumps(damaged))
    with pytest.raises(DatasetInfoError, match=r"dataset\.json: not a dataset manifest of "
                                               r"format 1 \(no 'records'\): reconvert"):
        DatasetInfo.load(converted)
    path.write_text(json.dumps(dict(json.loads(content), format=2)))
    with pytest.raises(DatasetInfoError, match="format 2, this version of keras_astpe reads"):
        DatasetInfo.load(converted)


def test_no_dataset_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist: write the dataset with: "
                                                r"python -m tfrecords_tools\.esc50"):
        DatasetInfo.load(tmp_path / "none", kind="esc50")
    with pytest.raises(FileNotFoundError, match=r"holds no dataset\.json: write the dataset "
                                                r"with: python -m tfrecords_tools\.audioset .* "
                                                r"or python -m tfrecords_tools\.esc50"):
        DatasetInfo.load(tmp_path)


def test_recorded_shards_matching_a_pattern(converted):
    (converted / "train-00002-of-00003.tfrecord").unlink()
    recorded = dataset_info.recorded_shards_matching(str(converted / "train-*.tfrecord"))
    assert sorted(recorded) == [str(converted / f"train-0000{index}-of-00003.tfrecord")
                                for index in range(3)]
    assert {(shard.num_bytes, shard.num_records) for shard in recorded.values()} == {
        (27160, 8)}
    assert dataset_info.recorded_shards_matching(str(converted / "other-*.tfrecord")) == {}
