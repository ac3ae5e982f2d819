"""Computes the log-mel normalization statistics of a training set and writes them as JSON.

    python -m tfrecords_tools.stats --input_pattern='/data/audioset/train-*.tfrecord' \\
        --output_dir=/data/audioset [--max_clips=20000] [--num_mel_bins=128 ...]

Writes `<output_dir>/normalization_stats.json` (see `keras_astpe.normalization`): the 1st
and 99th percentiles of every log-mel value of the clips, with the front-end settings used.
Pass the same front-end flags as the model's preset: the stats only fit that front end.
"""

import sys

import tensorflow as tf
from absl import app, flags

from keras_astpe.frontend import FrontEndConfig
from keras_astpe.normalization import compute_stats

FLAGS = flags.FLAGS
_DEFAULTS = FrontEndConfig()


def define_flags(flag_values=FLAGS):
    """Defined on demand rather than at import, so importing this module (tests, other
    tools) never collides with flags of the same name defined elsewhere."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("input_pattern", None, "Glob of the training TFRecord shards.",
                        required=True, **fv)
    flags.DEFINE_string("output_dir", None, "Directory for normalization_stats.json.",
                        required=True, **fv)
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


def run(flag_values=FLAGS):
    """Computes and writes the stats from parsed flags; exits with a message on bad input."""
    try:
        config = FrontEndConfig(
            frame_length=flag_values.frame_length, frame_step=flag_values.frame_step,
            fft_length=flag_values.fft_length, num_mel_bins=flag_values.num_mel_bins,
            lower_edge_hertz=flag_values.lower_edge_hertz,
            upper_edge_hertz=flag_values.upper_edge_hertz, log_offset=flag_values.log_offset)
        stats = compute_stats(flag_values.input_pattern, config,
                              max_clips=flag_values.max_clips, progress=True)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    except tf.errors.OpError as error:  # bad data: the message names the file
        sys.exit(f"error: {error.message}")
    path = stats.save(flag_values.output_dir)
    print(f"{stats.num_clips} clips: log-mel {stats.low:.4f} -> 0, {stats.high:.4f} -> 1; "
          f"wrote {path}")
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run()


if __name__ == "__main__":
    define_flags()
    app.run(main)
