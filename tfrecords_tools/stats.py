"""Computes the log-mel normalization statistics of a training set and writes them as JSON.

    python -m tfrecords_tools.stats --data_dir=/data/audioset [--max_clips=20000] \\
        [--num_mel_bins=128 ...] [--skip_bad_records]
    python -m tfrecords_tools.stats --input_pattern='/data/audioset/train-*.tfrecord' \\
        --output_dir=/data/audioset

`--data_dir`: a converted dataset; the clips are those of its training splits (role `train`
in its `dataset.json`, see `keras_astpe.data.dataset_info`; for ESC-50 every fold), and the
stats are written next to them unless `--output_dir` says otherwise. `--input_pattern`:
any TFRecords. Writes `<output_dir>/normalization_stats.json` (see
`keras_astpe.normalization`): the 1st and 99th percentiles of every log-mel value of the
clips, with the front-end settings used. Pass the same front-end flags as the model's
preset: the stats only fit that front end.
"""

import dataclasses

from keras_astpe import cli
from keras_astpe.cli import setting
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.data.statistics import compute_stats
from keras_astpe.frontend import FrontEndConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatsConfig:
    """The flags of `python -m tfrecords_tools.stats` (the front end's fields included)."""

    data_dir: str | None = setting(None, help="A converted dataset: its training splits are "
                                   "used (give this or --input_pattern).")
    input_pattern: str | None = setting(None, help="Glob of the training TFRecord shards "
                                        "(give this or --data_dir).")
    output_dir: str | None = setting(None, help="Directory for normalization_stats.json "
                                     "(default: --data_dir).")
    skip_bad_records: bool = setting(False, help="Skip and count bad or lost records instead "
                                     "of stopping at the first.")
    max_clips: int | None = setting(None, help="Use only the first N clips (default: all).")
    frontend: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)

    def __post_init__(self):
        if (self.data_dir is None) == (self.input_pattern is None):
            raise ValueError("give exactly one of --data_dir and --input_pattern")
        if self.data_dir is None and self.output_dir is None:
            raise ValueError("--input_pattern needs --output_dir")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError(f"--max_clips must be >= 1, got {self.max_clips}")


def _training_files(data_dir):
    """The shards of the training splits of a converted dataset."""
    info = DatasetInfo.load(data_dir)
    splits = info.splits_with_role("train")
    if not splits:
        raise ValueError(f"{data_dir} has no training split (its splits: "
                         f"{sorted(info.splits)}): pass --input_pattern")
    print(f"{info.name}: training split(s) {', '.join(splits)}", flush=True)
    return [path for split in splits for path in info.split_files(split)]


def run(config):
    """Computes and writes the stats of `config`; returns the path written."""
    files = (config.input_pattern if config.data_dir is None
             else _training_files(config.data_dir))
    stats = compute_stats(files, config.frontend, max_clips=config.max_clips,
                          skip_bad_records=config.skip_bad_records, progress=True)
    path = stats.save(config.output_dir or config.data_dir)
    skipped = (f"; skipped {stats.skipped_records} bad or lost records (see the warnings)"
               if config.skip_bad_records else "")
    print(f"{stats.num_clips} clips: log-mel {stats.low:.4f} -> 0, {stats.high:.4f} -> 1"
          f"{skipped}; wrote {path}")
    return path


if __name__ == "__main__":
    cli.run(run, StatsConfig)
