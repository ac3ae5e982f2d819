"""The TFRecord schema every `tfrecords_tools` converter writes and every pipeline reads.

One `tf.train.Example` per clip:

| feature                | type          | meaning                                                |
|------------------------|---------------|--------------------------------------------------------|
| `audio/pcm16`          | bytes         | mono 16 kHz waveform, 16-bit signed little-endian PCM  |
| `audio/sample_rate`    | int64         | sample rate of `audio/pcm16`; always 16000             |
| `audio/original_sample_rate` | int64   | sample rate of the source file before resampling       |
| `audio/duration`       | float         | duration in seconds of the source file                 |
| `clip_id`              | bytes         | YTID, ESC-50 file name, or path relative to the input  |
| `labels`               | int64 list    | class indices (several for AudioSet, one otherwise)    |
| `fold`                 | int64         | ESC-50 fold (1..5); -1 where the dataset has none      |

Only core TensorFlow ops read it (`tf.io.parse_single_example`, `tf.io.decode_raw`): the
compiled ops of tensorflow-io do not load with TensorFlow >= 2.17.
"""

import numpy as np
import tensorflow as tf

SAMPLE_RATE = 16000
NO_FOLD = -1

FEATURES = {
    "audio/pcm16": tf.io.FixedLenFeature([], tf.string),
    "audio/sample_rate": tf.io.FixedLenFeature([], tf.int64),
    "audio/original_sample_rate": tf.io.FixedLenFeature([], tf.int64),
    "audio/duration": tf.io.FixedLenFeature([], tf.float32),
    "clip_id": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.VarLenFeature(tf.int64),
    "fold": tf.io.FixedLenFeature([], tf.int64, default_value=NO_FOLD),
}


def encode_example(waveform, clip_id, labels, *, original_sample_rate, duration,
                   fold=NO_FOLD):
    """Serializes one clip. `waveform` is float in [-1, 1] at 16 kHz, mono."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be mono (1-D), got shape {waveform.shape}")
    if not np.all(np.isfinite(waveform)):
        raise ValueError(f"waveform of {clip_id!r} contains NaN or Inf")
    pcm = np.clip(np.round(waveform * 32767.0), -32768, 32767).astype("<i2")

    def _int(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    feature = {
        "audio/pcm16": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pcm.tobytes()])),
        "audio/sample_rate": _int([SAMPLE_RATE]),
        "audio/original_sample_rate": _int([int(original_sample_rate)]),
        "audio/duration": tf.train.Feature(float_list=tf.train.FloatList(value=[duration])),
        "clip_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[clip_id.encode()])),
        "labels": _int(int(label) for label in labels),
        "fold": _int([int(fold)]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode_pcm16(pcm_bytes):
    """`audio/pcm16` bytes -> int16 samples; an odd byte count is an InvalidArgumentError."""
    return tf.io.decode_raw(pcm_bytes, tf.int16, little_endian=True)


def pcm_to_waveform(pcm):
    """int16 samples -> float32 waveform in [-1, 1)."""
    return tf.cast(pcm, tf.float32) * (1.0 / 32768.0)


def decode_example(serialized):
    """Parses one serialized example into a dict of tensors (graph-safe, for tf.data).

    Returns `waveform` (float32 in [-1, 1]), `clip_id`, `labels` (dense int64 indices),
    `fold`, `original_sample_rate` and `duration`.
    """
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return {
        "waveform": pcm_to_waveform(decode_pcm16(parsed["audio/pcm16"])),
        "clip_id": parsed["clip_id"],
        "labels": tf.sparse.to_dense(parsed["labels"]),
        "fold": parsed["fold"],
        "original_sample_rate": parsed["audio/original_sample_rate"],
        "duration": parsed["audio/duration"],
    }
