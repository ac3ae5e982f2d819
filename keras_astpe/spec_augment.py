"""SpecAugment on the linear magnitude spectrogram, as in the AST-PE paper (SPEC section 1).

An example is augmented with probability `probability`. An augmented example gets
`min_masks`..`max_masks` time masks and, drawn independently, `min_masks`..`max_masks`
frequency masks, each a contiguous band of 1..`max_time_width` frames or 1..`max_freq_width`
linear bins set to 0, at a uniform position. Masks may overlap, as in the original
SpecAugment. Only stateless random ops are used: the same seed gives the
same masks on every run, in tf.data and in eager code alike.
"""

import dataclasses

import numpy as np

from keras_astpe._startup import tf


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    """Mask counts and widths; the defaults are the paper's."""

    probability: float = 0.5
    min_masks: int = 1
    max_masks: int = 2
    max_freq_width: int = 64
    max_time_width: int = 100

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if self.min_masks < 0:
            raise ValueError(f"min_masks must be >= 0, got {self.min_masks}")
        if self.max_masks < self.min_masks:
            raise ValueError(
                f"max_masks ({self.max_masks}) must be >= min_masks ({self.min_masks})")
        for name in ("max_freq_width", "max_time_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def spec_augment_masks(seed, num_frames, num_bins, config, batch_shape=()):
    """Keep-masks `(keep_time [..., frames], keep_freq [..., bins])` of 0.0/1.0 values.

    Multiplying a magnitude spectrogram by `keep_time[..., :, None] * keep_freq[..., None, :]`
    applies SpecAugment. With a `batch_shape`, one `seed` draws independent masks for every
    example of the batch. Both axes are handled at once, as 2 x max_masks mask slots (time
    slots first) on one line of `frames + 1 + bins` positions (time, a gap, frequency): +1
    where a mask starts, -1 where it ends, and a running sum above 0 marks the masked
    positions. That is a few ops on short vectors, whatever the mask count.
    """
    slots = config.max_masks
    max_widths = np.repeat(np.array([config.max_time_width, config.max_freq_width],
                                    np.float32), slots)
    if isinstance(num_frames, int) and isinstance(num_bins, int):
        size = np.repeat(np.array([num_frames, num_bins], np.float32), slots)
        widest = np.minimum(max_widths, size)
    else:
        size = tf.repeat(tf.cast(tf.stack([num_frames, num_bins]), tf.float32), slots)
        widest = tf.minimum(max_widths, size)
    # Draws: apply flag, a mask count per axis, then per slot a width and a start.
    batch_shape = tf.cast(batch_shape, tf.int32)
    u = tf.random.stateless_uniform(tf.concat([batch_shape, [3 + 4 * slots]], axis=0),
                                    seed=seed, dtype=tf.float32)
    u = tf.reshape(u, [-1, 3 + 4 * slots])  # [examples, draws]
    # Slot k of an axis is active when k < count = min + floor(u * n), n = max - min + 1,
    # that is when u >= (k - min + 1) / n.
    choices = slots - config.min_masks + 1
    threshold = np.tile((np.arange(slots) - config.min_masks + 1) / choices, 2).astype(
        np.float32)
    count_draw = tf.gather(u, tf.constant([1] * slots + [2] * slots, tf.int32), axis=-1)
    active = tf.logical_and(count_draw >= threshold, u[:, :1] < config.probability)
    # Width uniform on 1..widest, start uniform on 0..size - width (the minimums guard
    # float32 rounding of u * n up to n).
    width = tf.minimum(tf.floor(u[:, 3:3 + 2 * slots] * widest) + 1.0, widest)
    start = tf.minimum(tf.floor(u[:, 3 + 2 * slots:] * (size - width + 1.0)), size - width)
    end = start + width * tf.cast(active, tf.float32)  # an inactive slot ends where it starts
    line = tf.repeat(tf.stack([0, num_frames + 1]), slots)  # where each slot's axis begins
    edges = tf.cast(tf.concat([start, end], axis=-1), tf.int32) + tf.tile(line, [2])
    examples = tf.shape(u)[0]
    rows = tf.broadcast_to(tf.range(examples)[:, None], tf.shape(edges))
    steps = np.repeat(np.array([1, -1], np.int32), 2 * slots)
    marks = tf.scatter_nd(tf.stack([rows, edges], axis=-1),
                          tf.broadcast_to(steps, tf.shape(edges)),
                          tf.stack([examples, num_frames + num_bins + 2]))
    keep = tf.cast(tf.cumsum(marks, axis=-1) <= 0, tf.float32)
    keep = tf.reshape(keep, tf.concat([batch_shape, [-1]], axis=0))
    return keep[..., :num_frames], keep[..., num_frames + 1:num_frames + 1 + num_bins]


def spec_augment(magnitude, seed, config):
    """Masks `magnitude` ([frames, bins], or [batch, frames, bins]) with the given seed.

    `seed` is a shape-[2] integer tensor. For batched input the one seed draws independent
    masks per example. Masked values are set to 0.
    """
    magnitude = tf.convert_to_tensor(magnitude)
    if magnitude.shape.rank not in (2, 3):
        raise ValueError(f"magnitude must be [frames, bins] or [batch, frames, bins], "
                         f"got shape {magnitude.shape}")
    shape = tf.shape(magnitude)
    frames, bins = magnitude.shape[-2], magnitude.shape[-1]
    keep_time, keep_freq = spec_augment_masks(
        seed, shape[-2] if frames is None else frames, shape[-1] if bins is None else bins,
        config, batch_shape=shape[:-2])
    keep = keep_time[..., :, None] * keep_freq[..., None, :]
    return magnitude * tf.cast(keep, magnitude.dtype)
