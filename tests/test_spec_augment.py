"""SpecAugment: stateless seeding, probability, mask shapes, counts and widths."""

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.spec_augment import SpecAugmentConfig, spec_augment, spec_augment_masks

pytestmark = pytest.mark.backend_agnostic

FRAMES, BINS = 992, 257
ONES = tf.ones([FRAMES, BINS])


def _runs(zero):
    """(start, length) of each run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], zero, [False]]).astype(int)
    starts = np.nonzero(np.diff(padded) == 1)[0]
    ends = np.nonzero(np.diff(padded) == -1)[0]
    return list(zip(starts, ends - starts, strict=True))


def _bands(masked):
    """Zeroed frames and bins of a masked all-ones spectrogram, checking that every zero
    lies in a fully zeroed frame or bin (masks span a whole axis)."""
    zero = masked == 0
    zero_frames, zero_bins = zero.all(axis=1), zero.all(axis=0)
    assert np.array_equal(zero, zero_frames[:, None] | zero_bins[None, :])
    return _runs(zero_frames), _runs(zero_bins)


def test_same_seed_same_masks_and_different_seeds_differ():
    config = SpecAugmentConfig(probability=1.0)
    first = spec_augment(ONES, tf.constant([1, 2]), config).numpy()
    again = spec_augment(ONES, tf.constant([1, 2]), config).numpy()
    in_graph = tf.function(lambda seed: spec_augment(ONES, seed, config))(
        tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, in_graph)
    others = [spec_augment(ONES, tf.constant([1, s]), config).numpy() for s in range(3, 8)]
    assert all(not np.array_equal(first, other) for other in others)


def test_probability_is_the_fraction_of_augmented_examples():
    config = SpecAugmentConfig()  # probability 0.5
    augmented = [bool((spec_augment(ONES, tf.constant([5, s]), config).numpy() == 0).any())
                 for s in range(400)]
    # Binomial(400, 0.5): standard deviation 0.025; the seeds are fixed, so is the result.
    assert 0.42 < np.mean(augmented) < 0.58


def test_probability_zero_is_identity():
    magnitude = tf.random.stateless_uniform([FRAMES, BINS], seed=[0, 1])
    config = SpecAugmentConfig(probability=0.0)
    for s in range(20):
        np.testing.assert_array_equal(spec_augment(magnitude, [3, s], config).numpy(),
                                      magnitude.numpy())


def test_one_mask_per_axis_is_one_contiguous_band_of_allowed_width():
    config = SpecAugmentConfig(probability=1.0, min_masks=1, max_masks=1, max_freq_width=64,
                               max_time_width=100)
    widths_t, widths_f = [], []
    for s in range(200):
        time_runs, freq_runs = _bands(spec_augment(ONES, [9, s], config).numpy())
        assert len(time_runs) == 1 and len(freq_runs) == 1
        widths_t.append(time_runs[0][1])
        widths_f.append(freq_runs[0][1])
    assert 1 <= min(widths_t) and max(widths_t) <= 100
    assert 1 <= min(widths_f) and max(widths_f) <= 64
    # Widths are uniform on 1..max: over 200 draws both ends of the range show up.
    assert min(widths_t) <= 10 and max(widths_t) >= 90
    assert min(widths_f) <= 7 and max(widths_f) >= 57


def test_one_or_two_masks_per_axis():
    config = SpecAugmentConfig(probability=1.0)  # 1..2 masks, widths 1..64 bins, 1..100 frames
    counts_t, counts_f = set(), set()
    for s in range(200):
        time_runs, freq_runs = _bands(spec_augment(ONES, [4, s], config).numpy())
        # Two masks may overlap or touch and then read as one band.
        assert 1 <= len(time_runs) <= 2 and 1 <= len(freq_runs) <= 2
        assert sum(width for _, width in time_runs) <= 2 * 100
        assert sum(width for _, width in freq_runs) <= 2 * 64
        counts_t.add(len(time_runs))
        counts_f.add(len(freq_runs))
    assert counts_t == {1, 2} and counts_f == {1, 2}


def test_mask_counts_are_drawn_per_axis_between_min_and_max():
    config = SpecAugmentConfig(probability=1.0, min_masks=3, max_masks=3, max_freq_width=1,
                               max_time_width=1)
    for s in range(50):  # width-1 masks: 3 distinct positions unless two coincide
        keep_time, keep_freq = spec_augment_masks([2, s], FRAMES, BINS, config)
        assert 1 <= (keep_time.numpy() == 0).sum() <= 3
        assert 1 <= (keep_freq.numpy() == 0).sum() <= 3
    none = SpecAugmentConfig(probability=1.0, min_masks=0, max_masks=0)
    keep_time, keep_freq = spec_augment_masks([2, 0], FRAMES, BINS, none)
    assert keep_time.numpy().all() and keep_freq.numpy().all()


def test_masks_never_exceed_a_short_axis():
    config = SpecAugmentConfig(probability=1.0, max_time_width=100)
    for s in range(50):
        masked = spec_augment(tf.ones([20, BINS]), [6, s], config).numpy()
        time_runs, _ = _bands(masked)
        assert all(0 <= start and start + width <= 20 for start, width in time_runs)


def test_batch_draws_independent_masks_per_example():
    config = SpecAugmentConfig(probability=1.0)
    batch = spec_augment(tf.ones([8, 100, BINS]), [1, 1], config).numpy()
    assert batch.shape == (8, 100, BINS)
    patterns = {(batch[i] == 0).tobytes() for i in range(8)}
    assert len(patterns) == 8
    for example in batch:
        _bands(example)


@pytest.mark.parametrize("kwargs, message", [
    ({"probability": 1.5}, "probability"),
    ({"min_masks": -1}, "min_masks"),
    ({"min_masks": 3, "max_masks": 2}, "max_masks"),
    ({"max_freq_width": 0}, "max_freq_width"),
    ({"max_time_width": 0}, "max_time_width"),
])
def test_invalid_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpecAugmentConfig(**kwargs)


def test_rank_is_checked():
    with pytest.raises(ValueError, match="frames, bins"):
        spec_augment(tf.ones([BINS]), [1, 2], SpecAugmentConfig())
