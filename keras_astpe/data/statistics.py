"""The normalization statistics of a training set, computed from its TFRecords.

`compute_stats` streams the log-mel values of the clips, read by the pipeline's reader
(`keras_astpe.data.shards.read_records`, with its checks of every shard), into the
fixed-width histogram of `keras_astpe.normalization`, whose percentiles give the
`NormalizationStats`.
"""

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from keras_astpe.data import shards
from keras_astpe.frontend import FrontEndConfig, log_mel, magnitude_spectrogram
from keras_astpe.normalization import (
    HIGH_PERCENTILE,
    HISTOGRAM_BINS,
    LOW_PERCENTILE,
    NormalizationStats,
    histogram_range,
    percentile_from_histogram,
)

_BATCH = 64  # clips whose histograms are summed together


def compute_stats(file_pattern, config: FrontEndConfig, *, max_clips=None,
                  skip_bad_records=False, progress=True):
    """Streams log-mel values of the clips in `file_pattern` into a histogram -> stats.

    Whole clips are used, as stored, with no crop, padding or augmentation. Bad data raise
    an error naming the file, as in the training pipeline; with `skip_bad_records=True` they
    are skipped, logged and counted as in training (`BadRecordReport`): the stats'
    `skipped_records` holds the records skipped or lost.
    """
    files = shards.resolve_files(file_pattern)
    report = shards.BadRecordReport() if skip_bad_records else None
    value_range = histogram_range(config)

    def histogram(element):
        values = log_mel(magnitude_spectrogram(element["pcm16"], config), config)
        return tf.histogram_fixed_width(values, value_range, nbins=HISTOGRAM_BINS,
                                        dtype=tf.int32)

    dataset = shards.read_records(files, sample_rate=config.sample_rate, report=report)
    if max_clips is not None:
        dataset = dataset.take(max_clips)
    dataset = (dataset.map(histogram, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(_BATCH)
               .map(lambda counts: (tf.reduce_sum(counts, axis=0), tf.shape(counts)[0]))
               .prefetch(tf.data.AUTOTUNE))
    counts = np.zeros(HISTOGRAM_BINS, np.int64)
    num_clips = 0
    known = shards.recorded_num_records(files)
    total = min((n for n in (max_clips, known) if n is not None), default=None)
    with tqdm(total=total, unit="clip", desc="log-mel histogram",
              disable=not progress) as bar:
        for batch_counts, size in dataset.as_numpy_iterator():
            counts += batch_counts
            num_clips += int(size)
            bar.update(int(size))
    if counts.sum() == 0:
        raise ValueError(f"no log-mel frames in {file_pattern!r}: no clip, or every clip "
                         f"shorter than {config.frame_length} samples")
    return NormalizationStats(
        low=float(percentile_from_histogram(counts, value_range, LOW_PERCENTILE)),
        high=float(percentile_from_histogram(counts, value_range, HIGH_PERCENTILE)),
        num_clips=num_clips, frontend=config,
        skipped_records=0 if report is None else report.records)
