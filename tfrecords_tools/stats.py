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

import sys

import tensorflow as tf
from absl import app, flags

from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.data.statistics import compute_stats
from keras_astpe.frontend import FrontEndConfig

FLAGS = flags.FLAGS
_DEFAULTS = FrontEndConfig()


def define_flags(flag_values=FLAGS):
    """Defined on demand rather than at import, so importing this module (tests, other
    tools) never collides with flags of the same name defined elsewhere."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("data_dir", None, "A converted dataset: its training splits are "
                        "used (give this or --input_pattern).", **fv)
    flags.DEFINE_string("input_pattern", None, "Glob of the training TFRecord shards (give "
                        "this or --data_dir).", **fv)
    flags.DEFINE_string("output_dir", None, "Directory for normalization_stats.json "
                        "(default: --data_dir).", **fv)
    flags.DEFINE_bool("skip_bad_records", False, "Skip and count bad or lost records "
                      "instead of stopping at the first.", **fv)
    flags.DEFINE_integer("max_clips", None, "Use only the first N clips (default: all).",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("frame_length", _DEFAULTS.frame_length, "STFT window, samples.", **fv)
    flags.DEFINE_integer("frame_step", _DEFAULTS.frame_step, "STFT hop, samples.", **fv)
    flags.DEFINE_integer("fft_length", _DEFAULTS.fft_length, "FFT size.", **fv)
    flags.DEFINE_integer("num_mel_bins", _DEFAULTS.num_mel_bins, "Mel bands.", **fv)
    flags.DEFINE_float("lower_edge_hertz", _DEFAULTS.lower_edge_hertz, "Lowest mel edge, Hz.",
                       **fv)
    flags.DEFINE_float("upper_edge_hertz", _DEFAULTS.upper_edge_hertz,
                       "Highest mel edge, Hz.", **fv)
    flags.DEFINE_float("log_offset", _DEFAULTS.log_offset, "log(mel + log_offset).", **fv)
    flags.register_multi_flags_validator(
        ["data_dir", "input_pattern"], lambda values: sum(v is not None for v in
                                                          values.values()) == 1,
        "give exactly one of --data_dir and --input_pattern", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["data_dir", "output_dir"], lambda values: any(v is not None for v in
                                                       values.values()),
        "--input_pattern needs --output_dir", flag_values=flag_values)


def _training_files(data_dir):
    """The shards of the training splits of a converted dataset."""
    info = DatasetInfo.load(data_dir)
    splits = info.splits_with_role("train")
    if not splits:
        raise ValueError(f"{data_dir} has no training split (its splits: "
                         f"{sorted(info.splits)}): pass --input_pattern")
    print(f"{info.name}: training split(s) {', '.join(splits)}", flush=True)
    return [path for split in splits for path in info.split_files(split)]


def run(flag_values=FLAGS):
    """Computes and writes the stats from parsed flags; exits with a message on bad input."""
    try:
        config = FrontEndConfig(
            frame_length=flag_values.frame_length, frame_step=flag_values.frame_step,
            fft_length=flag_values.fft_length, num_mel_bins=flag_values.num_mel_bins,
            lower_edge_hertz=flag_values.lower_edge_hertz,
            upper_edge_hertz=flag_values.upper_edge_hertz, log_offset=flag_values.log_offset)
        files = (flag_values.input_pattern if flag_values.data_dir is None
                 else _training_files(flag_values.data_dir))
        stats = compute_stats(files, config, max_clips=flag_values.max_clips,
                              skip_bad_records=flag_values.skip_bad_records, progress=True)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    except tf.errors.OpError as error:  # bad data: the message names the file
        sys.exit(f"error: {error.message} (--skip_bad_records skips and counts bad data)")
    path = stats.save(flag_values.output_dir or flag_values.data_dir)
    skipped = (f"; skipped {stats.skipped_records} bad or lost records (see the warnings)"
               if flag_values.skip_bad_records else "")
    print(f"{stats.num_clips} clips: log-mel {stats.low:.4f} -> 0, {stats.high:.4f} -> 1"
          f"{skipped}; wrote {path}")
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run()


if __name__ == "__main__":
    define_flags()
    app.run(main)
