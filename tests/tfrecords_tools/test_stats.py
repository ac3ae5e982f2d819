"""`python -m tfrecords_tools.stats`: the CLI writes normalization_stats.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from absl import flags

from keras_astpe import cli
from keras_astpe.data import schema
from keras_astpe.data.statistics import compute_stats
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.normalization import STATS_FILENAME, NormalizationStats
from tfrecords_tools import common
from tfrecords_tools import stats as stats_tool

pytestmark = pytest.mark.backend_agnostic

ROOT = Path(__file__).resolve().parents[2]


def _write_clips(directory, count=5):
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(directory / "train-0.tfrecord")) as writer:
        for i in range(count):
            writer.write(schema.encode_example(
                (0.05 * (i + 1)) * rng.standard_normal(schema.SAMPLE_RATE // 2), f"c{i}", [i],
                original_sample_rate=schema.SAMPLE_RATE, duration=0.5))
    return str(directory / "train-*.tfrecord")


def _flags(*args):
    """The tool's config from its flags, parsed into a private FlagValues (no global
    state)."""
    flag_values = flags.FlagValues()
    cli.define_flags(stats_tool.StatsConfig, flag_values)
    flag_values(["stats", *args])
    return cli.config_from_flags(stats_tool.StatsConfig, flag_values)


def test_cli_writes_the_stats_of_the_clips(tmp_path):
    pattern = _write_clips(tmp_path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.stats", f"--input_pattern={pattern}",
         f"--output_dir={tmp_path / 'out'}", "--max_clips=4", "--num_mel_bins=32"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "4 clips" in result.stdout and STATS_FILENAME in result.stdout
    assert "log-mel histogram" in result.stderr  # the tqdm progress bar
    stats = NormalizationStats.load(tmp_path / "out")
    config = FrontEndConfig(num_mel_bins=32)
    assert stats == compute_stats(pattern, config, max_clips=4, progress=False)
    assert json.loads((tmp_path / "out" / STATS_FILENAME).read_text())["num_clips"] == 4


def test_run_uses_every_clip_and_the_front_end_flags(tmp_path):
    pattern = _write_clips(tmp_path)
    path = stats_tool.run(_flags(f"--input_pattern={pattern}", f"--output_dir={tmp_path}",
                                 "--upper_edge_hertz=8000", "--lower_edge_hertz=0"))
    stats = NormalizationStats.load(path)
    assert stats.num_clips == 5
    assert stats.frontend == FrontEndConfig(lower_edge_hertz=0.0, upper_edge_hertz=8000.0)


def test_bad_input_exits_with_a_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFRecord file matches"):
        stats_tool.run(_flags(f"--input_pattern={tmp_path / 'none-*.tfrecord'}",
                              f"--output_dir={tmp_path}"))
    with pytest.raises(ValueError, match="upper_edge_hertz"):
        _flags(f"--input_pattern={tmp_path}", f"--output_dir={tmp_path}",
               "--upper_edge_hertz=9000")
    with pytest.raises(ValueError, match="exactly one of"):
        _flags("--output_dir=x")  # --input_pattern or --data_dir is required
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.stats", f"--input_pattern={tmp_path}/x-*",
         f"--output_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no TFRecord file matches")


def _converted(tmp_path):
    """A converted dataset: split `train` (role train, 6 clips in 2 shards of 3) and split
    `eval` (role eval, 2 clips)."""
    rng = np.random.default_rng(1)
    items = {"train": [], "eval": []}
    for split, count in (("train", 6), ("eval", 2)):
        for k in range(count):
            path = tmp_path / f"{split}{k}.wav"
            sf.write(path, 0.1 * (k + 1) * rng.standard_normal(8000), schema.SAMPLE_RATE)
            items[split].append(common.WorkItem(str(path), f"{split}{k}", (0,),
                                                expected_seconds=0.5))
    dataset = common.DatasetDescription(name="d", kind="folder", class_names=("x",),
                                        multi_label=False, clip_seconds=0.5, command="")
    data_dir = tmp_path / "data"
    for split in items:
        common.convert_split(items[split], output_dir=str(data_dir), split=split, role=split,
                             dataset=dataset, shard_mb=0.05, num_workers=1, progress=False)
    return data_dir


def test_data_dir_uses_the_training_splits_and_skips_bad_records(tmp_path, capsys):
    data_dir = _converted(tmp_path)
    path = stats_tool.run(_flags(f"--data_dir={data_dir}"))
    assert path == str(data_dir / STATS_FILENAME)
    stats = NormalizationStats.load(path)
    assert stats.num_clips == 6 and stats.skipped_records == 0
    assert stats == compute_stats(str(data_dir / "train-*.tfrecord"), FrontEndConfig(),
                                  progress=False)
    shard = data_dir / "train-00001-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(OSError, match=r"train-00001-of-00002\.tfrecord: 100 bytes, "
                                      r"the converter wrote .* \(3 records\)"):
        stats_tool.run(_flags(f"--data_dir={data_dir}"))
    stats_tool.run(_flags(f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'out'}",
                          "--skip_bad_records"))
    assert "3 clips: log-mel" in capsys.readouterr().out
    stats = NormalizationStats.load(tmp_path / "out")
    assert (stats.num_clips, stats.skipped_records) == (3, 3)
    with pytest.raises(ValueError, match="exactly one of"):
        _flags(f"--data_dir={data_dir}", "--input_pattern=x")
    with pytest.raises(ValueError, match="needs --output_dir"):
        _flags("--input_pattern=x")
