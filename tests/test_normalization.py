"""Normalization stats: JSON round trip, histogram percentiles."""

import json

import numpy as np
import pytest

from keras_astpe import normalization
from keras_astpe.data import schema
from keras_astpe.frontend import FrontEndConfig, log_mel, magnitude_spectrogram
from keras_astpe.normalization import STATS_FILENAME, NormalizationStats

pytestmark = pytest.mark.backend_agnostic

RATE = schema.SAMPLE_RATE


def test_defaults_are_the_audioset_values_of_the_original_code():
    stats = NormalizationStats()
    assert (stats.low, stats.high, stats.num_clips, stats.frontend, stats.relu) == (
        -5.61, 2.07, 0, None, True)


def test_save_load_round_trip(tmp_path):
    stats = NormalizationStats(low=-4.25, high=3.5, num_clips=12,
                               frontend=FrontEndConfig(num_mel_bins=128), skipped_records=3)
    path = stats.save(tmp_path / "model")  # a directory, created
    assert path == str(tmp_path / "model" / STATS_FILENAME)
    assert NormalizationStats.load(tmp_path / "model") == stats
    assert NormalizationStats.load(path) == stats
    content = json.loads((tmp_path / "model" / STATS_FILENAME).read_text())
    assert content["frontend"]["num_mel_bins"] == 128 and content["skipped_records"] == 3
    assert "percentiles" in content["definition"]
    explicit = tmp_path / "custom.json"
    NormalizationStats().save(explicit)
    assert NormalizationStats.load(explicit) == NormalizationStats()
    affine = NormalizationStats(low=-0.935, high=1.949, relu=False)
    assert NormalizationStats.load(affine.save(tmp_path / "affine.json")) == affine


def test_stats_saved_without_relu_load_with_it(tmp_path):
    """A file written before `relu` existed keeps the ReLU it was used with."""
    (tmp_path / "old.json").write_text(json.dumps({"low": -4.0, "high": 3.0, "num_clips": 5,
                                                   "frontend": None}))
    assert NormalizationStats.load(tmp_path / "old.json").relu is True


def test_invalid_stats_raise():
    with pytest.raises(ValueError, match="low < high"):
        NormalizationStats(low=1.0, high=1.0)
    with pytest.raises(ValueError, match="low < high"):
        NormalizationStats(low=float("nan"), high=1.0)
    with pytest.raises(ValueError, match="relu must be True or False, got 'no'"):
        NormalizationStats(relu="no")


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
