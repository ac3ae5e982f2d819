"""Normalization stats: JSON round trip, histogram percentiles, compute_stats vs numpy."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import normalization
from keras_astpe.data import schema
from keras_astpe.frontend import FrontEndConfig, log_mel, magnitude_spectrogram
from keras_astpe.normalization import STATS_FILENAME, NormalizationStats, compute_stats

pytestmark = pytest.mark.backend_agnostic

RATE = schema.SAMPLE_RATE


def test_defaults_are_the_audioset_values_of_the_original_code():
    stats = NormalizationStats()
    assert (stats.low, stats.high, stats.num_clips, stats.frontend) == (-5.61, 2.07, 0, None)


def test_save_load_round_trip(tmp_path):
    stats = NormalizationStats(low=-4.25, high=3.5, num_clips=12,
                               frontend=FrontEndConfig(num_mel_bins=128))
    path = stats.save(tmp_path / "model")  # a directory, created
    assert path == str(tmp_path / "model" / STATS_FILENAME)
    assert NormalizationStats.load(tmp_path / "model") == stats
    assert NormalizationStats.load(path) == stats
    content = json.loads((tmp_path / "model" / STATS_FILENAME).read_text())
    assert content["frontend"]["num_mel_bins"] == 128
    assert "percentiles" in content["definition"]
    explicit = tmp_path / "custom.json"
    NormalizationStats().save(explicit)
    assert NormalizationStats.load(explicit) == NormalizationStats()


def test_invalid_stats_raise():
    with pytest.raises(ValueError, match="low < high"):
        NormalizationStats(low=1.0, high=1.0)
    with pytest.raises(ValueError, match="low < high"):
        NormalizationStats(low=float("nan"), high=1.0)


def test_percentile_from_histogram_is_within_one_bin_of_numpy():
    values = np.random.default_rng(0).normal(size=100_000)
    value_range = (-6.0, 6.0)
    counts, _ = np.histogram(values, bins=1200, range=value_range)
    width = 12.0 / 1200
    for q in (0.5, 1.0, 50.0, 99.0, 99.9):
        estimate = normalization.percentile_from_histogram(counts, value_range, q)
        assert abs(estimate - np.percentile(values, q)) <= width


def test_histogram_range_bounds_every_possible_value():
    config = FrontEndConfig()
    low, high = normalization.histogram_range(config)
    assert low == pytest.approx(np.log(config.log_offset))
    loudest = np.sign(np.sin(np.arange(RATE) * 2 * np.pi * 1000 / RATE)).astype(np.float32)
    values = log_mel(magnitude_spectrogram(loudest, config), config).numpy()
    assert values.max() < high


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
