"""Shards written by the real converter (`tfrecords_tools.common.convert_split`), for the
tests of the reader's checks against what the converter recorded."""

import numpy as np
import pytest
import soundfile as sf

from keras_astpe.data import schema
from tfrecords_tools import common

CLIP = 1600  # 0.1 s: 8 frames
CLASSES = ("a", "b", "c")
RECORDS_PER_SHARD = 8


@pytest.fixture
def converted(tmp_path):
    """`(data_dir, info)`: split `train` of 24 clips in 3 shards of 8 and split `eval` of 6
    clips in 3 shards of 2, converted from 16 kHz WAV files; clip k has label k % 3 and
    fold k % 5 + 1."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    items = {"train": [], "eval": []}
    for split, count in (("train", 24), ("eval", 6)):
        for k in range(count):
            path = audio / f"{split}{k:02d}.wav"
            sf.write(path, 0.2 * rng.standard_normal(CLIP), schema.SAMPLE_RATE,
                     subtype="PCM_16")
            items[split].append(common.WorkItem(str(path), f"{split}{k:02d}", (k % 3,),
                                                fold=k % 5 + 1, expected_seconds=0.1))
    dataset = common.DatasetDescription(
        name="tiny", kind="folder", class_names=CLASSES, multi_label=False,
        clip_seconds=0.1, command="python -m tfrecords_tools.folder --input_dir=audio")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    common.write_classes_csv(data_dir / "classes.csv", CLASSES)
    # 8 clips of ~3.5 kB (estimate) per train shard, 2 per eval shard.
    for split, shard_mb in (("train", 0.028), ("eval", 0.007)):
        summary = common.convert_split(
            items[split], output_dir=str(data_dir), split=split,
            role="train" if split == "train" else "eval", dataset=dataset, shard_mb=shard_mb,
            num_workers=1, progress=False)
        assert summary["num_shards"] == 3
    return data_dir
