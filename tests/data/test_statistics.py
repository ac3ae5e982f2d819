"""compute_stats: percentiles against numpy, max_clips, bad data raised or skipped and
counted as in training."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import normalization
from keras_astpe.data import schema, shards
from keras_astpe.data.statistics import compute_stats
from keras_astpe.frontend import FrontEndConfig, log_mel, magnitude_spectrogram

pytestmark = pytest.mark.backend_agnostic

RATE = schema.SAMPLE_RATE


def _write_clips(directory, num_shards=2):
    """Clips of different lengths and loudness, one with digital silence."""
    rng = np.random.default_rng(3)
    clips = [0.02 * rng.standard_normal(RATE),
             0.5 * rng.standard_normal(RATE // 2),
             np.concatenate([np.zeros(RATE // 2), 0.1 * rng.standard_normal(RATE)]),
             0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE),
             0.05 * rng.standard_normal(3 * RATE // 4),
             np.zeros(300)]  # shorter than one frame: no log-mel values
    writers = [tf.io.TFRecordWriter(str(directory / f"train-{i}.tfrecord"))
               for i in range(num_shards)]
    for i, clip in enumerate(clips):
        writers[i % num_shards].write(schema.encode_example(
            clip, f"clip{i}", [0], original_sample_rate=RATE, duration=clip.size / RATE))
    for writer in writers:
        writer.close()
    stored = [np.clip(np.round(c * 32767.0), -32768, 32767) / 32768.0 for c in clips]
    return str(directory / "train-*.tfrecord"), stored


def test_compute_stats_matches_numpy_percentiles(tmp_path):
    pattern, clips = _write_clips(tmp_path)
    config = FrontEndConfig(num_mel_bins=32)
    stats = compute_stats(pattern, config, progress=False)
    values = np.concatenate([
        log_mel(magnitude_spectrogram(clip.astype(np.float32), config), config).numpy().ravel()
        for clip in clips if clip.size >= config.frame_length])
    low, high = normalization.histogram_range(config)
    bin_width = (high - low) / normalization.HISTOGRAM_BINS
    assert stats.low == pytest.approx(np.percentile(values, 1.0), abs=2 * bin_width)
    assert stats.high == pytest.approx(np.percentile(values, 99.0), abs=2 * bin_width)
    assert stats.num_clips == len(clips)
    assert stats.frontend == config
    assert stats.high > stats.low


def test_compute_stats_max_clips(tmp_path):
    pattern, _ = _write_clips(tmp_path)
    stats = compute_stats(pattern, FrontEndConfig(), max_clips=3, progress=False)
    assert stats.num_clips == 3


def test_compute_stats_without_data_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFRecord file matches"):
        compute_stats(str(tmp_path / "none-*.tfrecord"), FrontEndConfig(), progress=False)
    with tf.io.TFRecordWriter(str(tmp_path / "short.tfrecord")) as writer:
        writer.write(schema.encode_example(np.zeros(100), "short", [0],
                                           original_sample_rate=RATE, duration=100 / RATE))
    with pytest.raises(ValueError, match="no log-mel frames"):
        compute_stats(str(tmp_path / "short.tfrecord"), FrontEndConfig(), progress=False)


def test_compute_stats_checks_recorded_shards_and_skips_like_training(converted, tmp_path):
    """A recorded shard cut to 3 of its 8 records: an error naming it, or with
    skip_bad_records the stats of the 19 clips left, 5 records counted as skipped."""
    shard = converted / "train-00001-of-00003.tfrecord"
    sizes = [16 + len(record.numpy()) for record in tf.data.TFRecordDataset(str(shard))]
    shard.write_bytes(shard.read_bytes()[:sum(sizes[:3])])
    pattern = str(converted / "train-*.tfrecord")
    with pytest.raises(shards.DamagedShardError,
                       match=r"train-00001-of-00003\.tfrecord: 10,185 bytes, the converter "
                             r"wrote 27,160 bytes \(8 records\)"):
        compute_stats(pattern, FrontEndConfig(), progress=False)
    stats = compute_stats(pattern, FrontEndConfig(), skip_bad_records=True, progress=False)
    assert (stats.num_clips, stats.skipped_records) == (19, 5)
    # The same as the stats of the 19 clips read, copied where no converter recorded them.
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in converted.glob("train-*.tfrecord"):
        (copy / path.name).write_bytes(path.read_bytes())
    readable = compute_stats(str(copy / "train-*.tfrecord"), FrontEndConfig(), progress=False)
    assert stats == dataclasses.replace(readable, skipped_records=5)
