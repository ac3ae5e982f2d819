"""AST's front end: kaldi-compatible log-mel filterbank ("fbank"), padded or cut, normalized.

The original AST (Gong et al., 2021; YuanGongND/ast `src/dataloader.py`) loads a float
waveform in [-1, 1], computes `torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True,
sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128,
dither=0.0, frame_shift=10)`, pads it with zero frames or cuts it to `target_length` (1024
for AudioSet), and normalizes it as (x - mean) / (2 * std) with its dataset statistics.
transformers' `ASTFeatureExtractor` does the same on a float waveform. This module computes
those values in Keras backend ops (`keras_astpe.framework_ops`), so the tf.data pipeline, the
model on any backend and the exports share one function, as `keras_astpe.frontend` does for
the paper's front end.

Kaldi's fbank, per 25 ms frame (10 ms hop, only frames that fit: `snip_edges=True`): subtract
the frame's mean (DC offset), pre-emphasis x[j] - 0.97 x[j - 1] (x[0] - 0.97 x[0] for the
first sample), a symmetric Hann window ("hanning"; "povey" is Hann^0.85), zero-padding to the
next power of two (512), power spectrum, triangular mel filters on the mel scale
1127 ln(1 + f / 700) from 20 Hz to Nyquist (the Nyquist bin has no weight), and
log(max(x, float32 epsilon)).

AST also subtracts the whole clip's mean from the waveform before the fbank; with the
per-frame DC removal that step changes nothing (a constant offset leaves every frame minus its
mean unchanged), so it is left out. The options `htk_compat`, `use_energy` and `dither` of the
call above only matter with an energy column or dither, which AST does not use. On a
multi-channel tensor torchaudio takes the first channel (`channel=-1` means channel 0); here
every leading axis is a batch axis, so downmix (as `keras_astpe.data.audio_io` does) first.
"""

import dataclasses
import functools

import numpy as np

from keras_astpe.framework_ops import ops_for
from keras_astpe.frontend import (
    Framing,
    apply_filterbank,
    frames_of,
    pad_end,
    pcm_scale,
    real_dft,
)

WINDOWS = ("hanning", "povey")
# Kaldi's floor before the log: std::numeric_limits<float>::epsilon().
LOG_FLOOR = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class KaldiFbankConfig(Framing):
    """Fbank, length and normalization settings; the defaults are AST's for AudioSet.

    `upper_edge_hertz=None` means the Nyquist frequency (kaldi's `high_freq=0`).
    `target_frames=None` keeps the clip's own number of frames. `mean` and `std` are the
    dataset statistics of the fbank values (AST: AudioSet -4.2677393 / 4.5689974, ESC-50
    -6.6268077 / 5.358466, Speech Commands -6.845978 / 5.5654526).
    """

    sample_rate: int = 16000
    frame_length: int = 400  # 25 ms
    frame_step: int = 160  # 10 ms
    num_mel_bins: int = 128
    lower_edge_hertz: float = 20.0
    upper_edge_hertz: float | None = None
    window: str = "hanning"
    preemphasis: float = 0.97
    target_frames: int | None = 1024
    mean: float = -4.2677393
    std: float = 4.5689974

    def __post_init__(self):
        for name in ("sample_rate", "frame_length", "frame_step", "num_mel_bins"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.frame_length < 2:
            raise ValueError(f"frame_length must be >= 2, got {self.frame_length}")
        if self.target_frames is not None and (
                not isinstance(self.target_frames, (int, np.integer)) or self.target_frames < 1):
            raise ValueError(
                f"target_frames must be a positive integer or None, got {self.target_frames!r}")
        if not 0.0 <= self.lower_edge_hertz < self.high_frequency <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate / 2, got "
                f"{self.lower_edge_hertz}, {self.upper_edge_hertz}, {self.sample_rate}")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if not 0.0 <= self.preemphasis <= 1.0:
            raise ValueError(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0.0):
            raise ValueError(f"need a finite mean and std > 0, got {self.mean}, {self.std}")

    @property
    def high_frequency(self) -> float:
        """The upper edge of the mel filters in Hz."""
        if self.upper_edge_hertz is None:
            return self.sample_rate / 2
        return self.upper_edge_hertz

    @property
    def fft_length(self) -> int:
        """The frame zero-padded to the next power of two (kaldi's `round_to_power_of_two`)."""
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def num_spectrogram_bins(self) -> int:
        return self.fft_length // 2 + 1


@functools.lru_cache(maxsize=8)
def mel_matrix(config: KaldiFbankConfig) -> np.ndarray:
    """Kaldi's `[spectrogram_bins, mel_bins]` filterbank (torchaudio's `get_mel_banks`).

    Triangles are linear in mel: filter i rises from mel edge i to i + 1 and falls to i + 2,
    the num_mel_bins + 2 edges evenly spaced in mel from the lower to the upper edge. The
    Nyquist bin gets no weight (kaldi pads the filterbank with a zero column).
    """
    def mel(hertz):
        return 1127.0 * np.log1p(np.asarray(hertz, np.float64) / 700.0)

    edges = np.linspace(mel(config.lower_edge_hertz), mel(config.high_frequency),
                        config.num_mel_bins + 2)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    num_bins = config.fft_length // 2
    bin_mel = mel(np.arange(num_bins) * config.sample_rate / config.fft_length)[:, None]
    weights = np.maximum(0.0, np.minimum((bin_mel - left) / (center - left),
                                         (right - bin_mel) / (right - center)))
    weights = np.concatenate([weights, np.zeros((1, config.num_mel_bins))], axis=0)
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _window(frame_length: int, window: str, scale: float) -> np.ndarray:
    """The symmetric Hann window (or Povey's Hann^0.85) times `scale`, as a constant."""
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame_length) / (frame_length - 1))
    if window == "povey":
        hann = hann**0.85
    return (hann * scale).astype(np.float32)


def log_fbank(waveform, config, dft="fft"):
    """`[..., samples]` -> `[..., frames, mel_bins]` float32 kaldi log-mel fbank values.

    `waveform`: float in [-1, 1] (as torchaudio loads it), or int16 PCM, scaled to it by
    2**-15 inside the window (exact: a power of two). Any length from one frame (25 ms);
    torchaudio refuses a shorter clip. `dft`: see `keras_astpe.frontend.real_dft`.
    """
    ops = ops_for(waveform)
    waveform = ops.convert_to_tensor(waveform)
    window = _window(config.frame_length, config.window, pcm_scale(waveform))
    frames = frames_of(waveform, config.frame_length, config.frame_step)
    frames = frames - ops.numpy.mean(frames, axis=-1, keepdims=True)
    if config.preemphasis:
        previous = ops.numpy.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
        frames = frames - config.preemphasis * previous
    # Zero-padded here rather than by rfft's fft_length, which fails on zero frames.
    frames = pad_end(frames * window, config.fft_length - config.frame_length, axis=-1)
    real, imag = real_dft(frames, config.fft_length, dft)
    power = ops.numpy.square(real) + ops.numpy.square(imag)
    return ops.numpy.log(ops.numpy.maximum(apply_filterbank(power, mel_matrix(config)),
                                           LOG_FLOOR))


def pad_or_cut(features, target_frames):
    """Zero frames appended, or the first `target_frames` kept, on axis -2 (as AST)."""
    ops = ops_for(features)
    kept = ops.convert_to_tensor(features)[..., :target_frames, :]
    padded = pad_end(kept, target_frames - ops.shape(kept)[-2], axis=-2)
    if hasattr(padded, "set_shape"):  # a TensorFlow graph: its static frame count
        padded.set_shape((*kept.shape[:-2], target_frames, kept.shape[-1]))
    return padded


def normalize(features, config):
    """AST's (x - mean) / (2 * std)."""
    return (features - np.float32(config.mean)) / np.float32(2.0 * config.std)


def waveform_to_fbank(waveform, config, *, masks=None, dft="fft"):
    """The whole AST front end: `[..., samples]` -> `[..., target_frames, mel_bins]` float32.

    Fbank, then zero frames appended or frames cut to `config.target_frames` (kept as they are
    when it is None), then normalized; padded frames, normalized like the rest, hold
    -mean / (2 * std) (0.467 with the AudioSet statistics), as in AST. `masks`: SpecAugment
    keep-masks `(keep_time [..., frames], keep_freq [..., mel_bins])` (training only),
    zeroing fbank values after the padding and before the normalization, as AST's
    dataloader does. `dft`: see `keras_astpe.frontend.real_dft`.
    """
    features = log_fbank(waveform, config, dft)
    if config.target_frames is not None:
        features = pad_or_cut(features, config.target_frames)
    if masks is not None:
        ops = ops_for(features)
        keep_time, keep_freq = (ops.convert_to_tensor(mask) for mask in masks)
        features = features * keep_time[..., :, None] * keep_freq[..., None, :]
    return normalize(features, config)
