"""Statistics that scale log-mel features to [0, 1], computed from a training set.

`low` and `high` are the 1st and 99th percentiles of all log-mel values (every frame and
mel bin of every training clip, without augmentation). Percentiles rather than min/max
keep digital silence (log(log_offset)) and a few loud clips from setting the range, and
they are streamed from a fixed-width histogram so memory stays flat on AudioSet scale; the
error is at most one histogram bin (`HISTOGRAM_BINS` bins over the whole possible range,
about 0.0009 wide for the default front end). The defaults are the AudioSet values of the
original code: log-mel -5.61 -> 0 and 2.07 -> 1. `keras_astpe.data.statistics.compute_stats`
computes them from TFRecords. The same map with other constants, and without the clip at
0 (`relu=False`), expresses the original code's other scalings (`(x - mean) / scale` is
`low=mean, high=mean + scale`), for converted models of those runs.
"""

import dataclasses
import json
import math
import os

import numpy as np

from keras_astpe._startup import tf
from keras_astpe.frontend import FrontEndConfig

STATS_FILENAME = "normalization_stats.json"
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0
HISTOGRAM_BINS = 20000


@dataclasses.dataclass(frozen=True)
class NormalizationStats:
    """Log-mel values mapped linearly to 0 (`low`) and 1 (`high`), then clipped below 0
    when `relu` (the paper's code); `frontend`: the config they fit."""

    low: float = -5.61
    high: float = 2.07
    num_clips: int = 0  # clips the stats come from; 0 = the AudioSet defaults
    frontend: FrontEndConfig | None = None
    skipped_records: int = 0  # bad or lost records skipped while computing them
    relu: bool = True

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise ValueError(f"need finite low < high, got low={self.low}, high={self.high}")
        if not isinstance(self.relu, (bool, np.bool_)):
            raise ValueError(f"relu must be True or False, got {self.relu!r}")

    def save(self, path_or_dir):
        """Writes JSON to a `.json` path, or to `<dir>/normalization_stats.json`."""
        path = _stats_path(path_or_dir, for_writing=True)
        content = {
            "low": self.low,
            "high": self.high,
            "num_clips": self.num_clips,
            "skipped_records": self.skipped_records,
            "relu": self.relu,
            "frontend": None if self.frontend is None else self.frontend.to_dict(),
            "definition": f"percentiles {LOW_PERCENTILE} and {HIGH_PERCENTILE} of the "
                          f"log-mel values of the training clips",
        }
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(content, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path_or_dir):
        """Reads what `save` wrote (a `.json` path or the directory holding it)."""
        path = _stats_path(path_or_dir, for_writing=False)
        with tf.io.gfile.GFile(path) as f:
            content = json.load(f)
        frontend = content.get("frontend")
        return cls(low=float(content["low"]), high=float(content["high"]),
                   num_clips=int(content.get("num_clips", 0)),
                   skipped_records=int(content.get("skipped_records", 0)),
                   relu=bool(content.get("relu", True)),
                   frontend=None if frontend is None else FrontEndConfig.from_dict(frontend))


def _stats_path(path_or_dir, *, for_writing):
    path = os.fspath(path_or_dir)
    if path.endswith(".json"):
        return path
    if for_writing:
        tf.io.gfile.makedirs(path)
    return os.path.join(path, STATS_FILENAME)


def histogram_range(config):
    """Bounds every log-mel value can take: |waveform| <= 1 bounds each STFT magnitude by the
    window sum, and the mel weights are <= 1."""
    window_sum = config.frame_length / 2.0
    return (math.log(config.log_offset),
            math.log(config.log_offset + window_sum * config.num_spectrogram_bins))


def percentile_from_histogram(counts, value_range, q):
    """The q-th percentile (0..100) of the values histogrammed, interpolated within a bin."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0:
        raise ValueError("no values to compute a percentile from")
    low, high = value_range
    width = (high - low) / len(counts)
    target = q / 100.0 * total
    cumulative = np.cumsum(counts)
    index = min(int(np.searchsorted(cumulative, target, side="left")), len(counts) - 1)
    before = cumulative[index] - counts[index]
    fraction = (target - before) / counts[index] if counts[index] else 0.0
    return low + (index + fraction) * width
