"""The audio front end: waveform -> STFT magnitude -> (SpecAugment) -> log-mel -> [0, 1].

Written once with TensorFlow ops so that the tf.data pipeline and the TF-Serving export call
the very same function (no train/serve skew). The model takes its output,
`[batch, frames, mel_bins]`, on any Keras backend. Values are the paper's (SPEC section 1).
"""

import dataclasses
import functools

import numpy as np

from keras_astpe._startup import tf
from keras_astpe.cli import setting


class Framing:
    """What the front-end configs share: the frame count of an uncentred STFT of
    `frame_length` samples every `frame_step`, and the dict round trip of the config."""

    def num_frames(self, num_samples: int) -> int:
        """Frames of `num_samples` samples: 158960 samples -> 992 frames (31 x 32)."""
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_step

    def num_samples(self, num_frames: int) -> int:
        """Smallest number of samples that gives `num_frames` frames."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return self.frame_length + (num_frames - 1) * self.frame_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        unknown = set(d) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class FrontEndConfig(Framing):
    """STFT and mel filterbank settings; the defaults are the paper's ("ast-pe" preset)."""

    sample_rate: int = setting(16000, help="Sample rate of the waveform, Hz.", flag=False)
    frame_length: int = setting(400, help="STFT window, samples (25 ms, Hann).")
    frame_step: int = setting(160, help="STFT hop, samples (10 ms).")
    fft_length: int = setting(512, help="FFT size (257 magnitude bins).")
    num_mel_bins: int = setting(64, help="Mel bands.")
    lower_edge_hertz: float = setting(125.0, help="Lowest mel edge, Hz.")
    upper_edge_hertz: float = setting(7500.0, help="Highest mel edge, Hz.")
    log_offset: float = setting(1e-3, help="log(mel + log_offset).")

    def __post_init__(self):
        for name in ("sample_rate", "frame_length", "frame_step", "fft_length",
                     "num_mel_bins"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.frame_length > self.fft_length:
            raise ValueError(f"frame_length ({self.frame_length}) must be <= fft_length "
                             f"({self.fft_length})")
        if not 0.0 <= self.lower_edge_hertz < self.upper_edge_hertz <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate / 2, got "
                f"{self.lower_edge_hertz}, {self.upper_edge_hertz}, {self.sample_rate}")
        if not self.log_offset > 0.0:
            raise ValueError(f"log_offset must be > 0, got {self.log_offset}")

    @property
    def num_spectrogram_bins(self) -> int:
        return self.fft_length // 2 + 1


@functools.lru_cache(maxsize=8)
def mel_matrix(config: FrontEndConfig) -> np.ndarray:
    """The [spectrogram_bins, mel_bins] filterbank of `tf.signal.linear_to_mel_weight_matrix`.

    Computed once per config, eagerly, so graphs embed it as a constant.
    """
    with tf.init_scope():
        return tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=config.num_mel_bins,
            num_spectrogram_bins=config.num_spectrogram_bins,
            sample_rate=config.sample_rate,
            lower_edge_hertz=config.lower_edge_hertz,
            upper_edge_hertz=config.upper_edge_hertz,
            dtype=tf.float32,
        ).numpy()


@functools.lru_cache(maxsize=8)
def _window(frame_length: int, scale: float) -> np.ndarray:
    """The periodic Hann window times `scale`, as a constant."""
    with tf.init_scope():
        return (tf.signal.hann_window(frame_length, dtype=tf.float32) * scale).numpy()


def magnitude_spectrogram(waveform, config):
    """`[..., samples]` -> `[..., frames, fft_length // 2 + 1]` float32 STFT magnitude.

    Periodic Hann window, no centring and no end padding, so the frame count is
    `config.num_frames(samples)`. A float waveform is in [-1, 1]; int16 PCM samples are
    scaled to it by 2**-15 inside the window, which gives bit-identical values (scaling by
    a power of two is exact) without a pass over the samples.
    """
    waveform = tf.convert_to_tensor(waveform)
    if waveform.dtype.is_integer and waveform.dtype != tf.int16:
        raise ValueError(f"an integer waveform must be int16 PCM, got {waveform.dtype.name}; "
                         f"convert other formats to float in [-1, 1]")
    scale = 2.0**-15 if waveform.dtype == tf.int16 else 1.0
    window = _window(config.frame_length, scale)
    stft = tf.signal.stft(tf.cast(waveform, tf.float32), frame_length=config.frame_length,
                          frame_step=config.frame_step, fft_length=config.fft_length,
                          window_fn=lambda frame_length, dtype: window, pad_end=False)
    # |z| as sqrt(re^2 + im^2): 3x faster than tf.abs (hypot) on CPU, same values to 1 ulp.
    return tf.sqrt(tf.square(tf.math.real(stft)) + tf.square(tf.math.imag(stft)))


def _log(mel, config):
    return tf.math.log(mel + config.log_offset)


def log_mel(magnitude, config):
    """Mel filterbank on the linear magnitude, then log(x + log_offset)."""
    return _log(tf.matmul(magnitude, mel_matrix(config)), config)


def scale(log_mel_features, stats):
    """(x - stats.low) / (stats.high - stats.low), then ReLU when `stats.relu` (the paper's
    code; some of its runs scale without it)."""
    low = tf.constant(stats.low, tf.float32)
    high = tf.constant(stats.high, tf.float32)
    scaled = (log_mel_features - low) / (high - low)
    return tf.nn.relu(scaled) if stats.relu else scaled


def waveform_to_features(waveform, config, stats, *, masks=None):
    """The whole front end: `[..., samples]` waveform -> `[..., frames, mel_bins]` (>= 0 when
    `stats.relu`).

    `waveform`: float32 in [-1, 1], or int16 PCM. `masks`: SpecAugment keep-masks
    `(keep_time [..., frames], keep_freq [..., bins])` from
    `spec_augment.spec_augment_masks` (training only), which mask the linear magnitude
    before the mel filters. They are applied in an equivalent, cheaper way: frequency masks
    zero rows of the mel matrix and time masks zero output frames, which gives the same
    values as `log_mel(magnitude * keep_time[..., :, None] * keep_freq[..., None, :])`.
    """
    magnitude = magnitude_spectrogram(waveform, config)
    if masks is None:
        return scale(log_mel(magnitude, config), stats)
    keep_time, keep_freq = masks
    weights = keep_freq[..., :, None] * mel_matrix(config)
    mel = tf.matmul(magnitude, weights) * keep_time[..., :, None]
    return scale(_log(mel, config), stats)
