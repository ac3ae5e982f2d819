"""The paper's audio front end: waveform -> STFT magnitude -> (SpecAugment) -> log-mel -> [0, 1].

Written once in Keras backend ops (`keras_astpe.framework_ops`): on a TensorFlow tensor
(the tf.data pipeline on any backend, the TensorFlow, ONNX and LiteRT exports) they are
TensorFlow's, inside a model on JAX or PyTorch that backend's, on its device; so training,
prediction and serving share one function. Values are the paper's (SPEC section 1): the
STFT of `tf.signal.stft` and the mel filters of `tf.signal.linear_to_mel_weight_matrix`.
The output is `[..., frames, mel_bins]`.
"""

import dataclasses
import functools

import keras
import numpy as np

from keras_astpe.cli import setting
from keras_astpe.framework_ops import constant, ops_for


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


def mel_matrix(config: FrontEndConfig, ops):
    """The `[spectrogram_bins, mel_bins]` filterbank of `tf.signal.linear_to_mel_weight_matrix`
    for the front end in `ops`: on TensorFlow that matrix to the bit (see `_window`).

    HTK's mel scale 1127 ln(1 + f / 700); triangles linear in mel between num_mel_bins + 2
    edges evenly spaced in mel from the lower to the upper edge; the DC bin gets no weight.
    """
    return constant(ops, _mel_matrix, config)


def _mel_matrix(ops, config):
    """`tf.signal.linear_to_mel_weight_matrix`'s float32 ops, in its order, in `ops`."""
    xp = ops.numpy

    def mel(hertz):
        return np.float32(1127.0) * xp.log(np.float32(1.0) + hertz / np.float32(700.0))

    bins = xp.linspace(np.float32(0.0), np.float32(config.sample_rate / 2.0),
                       config.num_spectrogram_bins, dtype="float32")[1:]
    bin_mel = xp.expand_dims(mel(bins), 1)
    edges = xp.linspace(mel(ops.convert_to_tensor(config.lower_edge_hertz, "float32")),
                        mel(ops.convert_to_tensor(config.upper_edge_hertz, "float32")),
                        config.num_mel_bins + 2, dtype="float32")
    left, center, right = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    weights = xp.maximum(np.float32(0.0), xp.minimum((bin_mel - left) / (center - left),
                                                     (right - bin_mel) / (right - center)))
    return xp.pad(weights, [[1, 0], [0, 0]])


def _window(ops, frame_length, scale):
    """The periodic Hann window times `scale` for the front end in `ops`, computed as
    `tf.signal.hann_window` computes it (float32 ops in its order): on TensorFlow that
    window to the bit. Far below a loud tone, the STFT's values depend on the window's
    last bits, and the log-mel's on the filterbank's."""
    return constant(ops, _hann, frame_length, scale)


def _hann(ops, frame_length, scale):
    n = ops.numpy.arange(frame_length, dtype="float32")
    hann = np.float32(0.5) - np.float32(0.5) * ops.numpy.cos(
        np.float32(2.0 * np.pi) * n / np.float32(frame_length))
    return hann * np.float32(scale)


def pcm_scale(waveform):
    """1 for a float waveform in [-1, 1], 2**-15 for int16 PCM (applied inside the window:
    exact, a power of two, without a pass over the samples); other integers are refused."""
    dtype = keras.backend.standardize_dtype(waveform.dtype)
    if dtype == "int16":
        return 2.0**-15
    if "int" in dtype:
        raise ValueError(f"an integer waveform must be int16 PCM, got {dtype}; convert "
                         f"other formats to float in [-1, 1]")
    return 1.0


def frames_of(waveform, frame_length, frame_step):
    """`[..., samples]` -> float32 `[..., frames, frame_length]`, the frames that fit (no
    padding); the samples of int16 PCM as they are."""
    ops = ops_for(waveform)
    waveform = ops.convert_to_tensor(waveform)
    if len(waveform.shape) == 0:
        raise ValueError("waveform must have a samples axis, got a scalar")
    return ops.math.extract_sequences(ops.cast(waveform, "float32"), frame_length,
                                      frame_step)


def pad_end(x, amount, axis):
    """`amount` zeros (a number or, in a TensorFlow graph, a scalar tensor; none when it is
    negative) appended on `axis` (negative) of `x`."""
    ops = ops_for(x)
    amount = max(amount, 0) if isinstance(amount, int) else ops.numpy.maximum(amount, 0)
    widths = [[0, 0]] * len(x.shape)
    widths[axis] = [0, amount]
    return ops.numpy.pad(x, widths)


DFTS = ("fft", "matmul")


def real_dft(frames, fft_length, dft="fft"):
    """`(real, imag)` `[..., fft_length // 2 + 1]` of the DFT of real `frames [..., n]`
    zero-padded to `fft_length`.

    `dft="fft"`: Keras' `rfft`. `"matmul"`: one product with the cosine and sine DFT
    matrices, for runtimes without an FFT that takes both parts (ONNX, as tf2onnx converts
    TensorFlow's); the same values up to float32 rounding, for more arithmetic.
    """
    ops = ops_for(frames)
    if dft == "fft":
        return ops.math.rfft(frames, fft_length=fft_length)
    if dft != "matmul":
        raise ValueError(f"dft must be one of {DFTS}, got {dft!r}")
    bins = fft_length // 2 + 1
    both = apply_filterbank(frames, _dft_matrix(frames.shape[-1], fft_length))
    return both[..., :bins], both[..., bins:]


@functools.lru_cache(maxsize=8)
def _dft_matrix(length, fft_length):
    """`[length, 2 * bins]`: cos(2 pi k n / N) then -sin(2 pi k n / N), float64 to float32."""
    angles = 2.0 * np.pi * np.outer(np.arange(length), np.arange(fft_length // 2 + 1))
    angles = angles / fft_length
    return np.concatenate([np.cos(angles), -np.sin(angles)], axis=1).astype(np.float32)


def magnitude_spectrogram(waveform, config, dft="fft"):
    """`[..., samples]` -> `[..., frames, fft_length // 2 + 1]` float32 STFT magnitude.

    Periodic Hann window, no centring and no end padding (`tf.signal.stft`), so the frame
    count is `config.num_frames(samples)`. `waveform`: float in [-1, 1], or int16 PCM.
    `dft`: see `real_dft`.
    """
    ops = ops_for(waveform)
    waveform = ops.convert_to_tensor(waveform)
    window = _window(ops, config.frame_length, pcm_scale(waveform))
    frames = frames_of(waveform, config.frame_length, config.frame_step)
    real, imag = real_dft(frames * window, config.fft_length, dft)
    return ops.numpy.sqrt(ops.numpy.square(real) + ops.numpy.square(imag))


def apply_filterbank(spectrogram, filterbank):
    """`spectrogram [..., frames, bins] @ filterbank [..., bins, mel_bins]`, the filterbank
    broadcast over the leading axes as a batched product: each clip of a batch gets the
    values it gets alone (on TensorFlow, one 2-D product of all clips' frames does not)."""
    ops = ops_for(spectrogram)
    missing = len(spectrogram.shape) - len(filterbank.shape)
    if missing > 0:
        filterbank = ops.numpy.reshape(filterbank, (1,) * missing + tuple(filterbank.shape))
    return ops.numpy.matmul(spectrogram, filterbank)


def _log(mel, config):
    return ops_for(mel).numpy.log(mel + config.log_offset)


def log_mel(magnitude, config):
    """Mel filterbank on the linear magnitude, then log(x + log_offset)."""
    return _log(apply_filterbank(magnitude, mel_matrix(config, ops_for(magnitude))), config)


def scale(log_mel_features, stats):
    """(x - stats.low) / (stats.high - stats.low), then ReLU when `stats.relu` (the paper's
    code; some of its runs scale without it)."""
    ops = ops_for(log_mel_features)
    scaled = (log_mel_features - np.float32(stats.low)) / np.float32(stats.high - stats.low)
    return ops.nn.relu(scaled) if stats.relu else scaled


def waveform_to_features(waveform, config, stats, *, masks=None, dft="fft"):
    """The whole front end: `[..., samples]` waveform -> `[..., frames, mel_bins]` (>= 0 when
    `stats.relu`).

    `waveform`: float32 in [-1, 1], or int16 PCM. `masks`: SpecAugment keep-masks
    `(keep_time [..., frames], keep_freq [..., bins])` from
    `spec_augment.spec_augment_masks` (training only), which mask the linear magnitude
    before the mel filters. They are applied in an equivalent, cheaper way: frequency masks
    zero rows of the mel matrix and time masks zero output frames, which gives the same
    values as `log_mel(magnitude * keep_time[..., :, None] * keep_freq[..., None, :])`.
    `dft`: see `real_dft`.
    """
    magnitude = magnitude_spectrogram(waveform, config, dft)
    if masks is None:
        return scale(log_mel(magnitude, config), stats)
    ops = ops_for(magnitude)
    keep_time, keep_freq = (ops.convert_to_tensor(mask) for mask in masks)
    weights = keep_freq[..., :, None] * mel_matrix(config, ops)
    mel = apply_filterbank(magnitude, weights) * keep_time[..., :, None]
    return scale(_log(mel, config), stats)
