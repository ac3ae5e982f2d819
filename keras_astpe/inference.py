"""Scoring raw audio with a loaded classifier, on any backend.

    model = keras.saving.load_model("model.keras")
    keras_astpe.tag(model, "dog.wav")       # [("Dog", 0.91), ("Bark", 0.40), ...]

The model carries its front end (`model.audio_converter`, see
`keras_astpe.models.audio_converter`) and its `class_names`, so nothing else is needed. A
file is decoded by `keras_astpe.data.audio_io.load_audio` (any format, mono, resampled with
SciPy's polyphase filter), as the TFRecord converters do; the features are those of the
tf.data training pipeline (the same function).

A clip is scored whole up to the length the model was trained on, and a longer one as
sliding windows of that length (`Windows`, `sliding_window_starts`) whose scores are
aggregated (mean or max), so that the cost of a clip grows linearly with its length: the
windows go through the model `batch` at a time, whatever the clip's length. The TF Serving
export (`keras_astpe.serving`) computes the same windows in its graph. Scoring a long clip
whole (`whole_clips=True`) is one attention over all of its patches: its memory grows with
the square of the length (docs/long_audio_and_limits.md).
"""

import csv
import dataclasses
import os
import sys
import time

import keras
import numpy as np

from keras_astpe.cli import setting
from keras_astpe.data import audio_io
from keras_astpe.framework_ops import is_tensorflow, ops_for
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.normalization import NormalizationStats

AGGREGATIONS = ("mean", "max")
WINDOW_BATCH = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowSettings:
    """How long clips are scored: the flags of `recipes/predict.py` and `recipes/export.py`,
    and the keyword arguments of `tag` and `export_saved_model`."""

    window_seconds: float | None = setting(
        None, help="Length of the sliding windows a longer clip is scored as (default: the "
        "model's trained clip length, 9.935 s for the presets' 992 frames, and a clip that "
        "gives no more patches than that, up to 10.255 s, is scored whole).")
    hop_seconds: float | None = setting(
        None, help="Step between windows (default: the window length).")
    aggregation: str = setting("mean", choices=AGGREGATIONS,
                               help="How the window scores of a clip are combined (in the "
                               "graph, for an export).")
    whole_clips: bool = setting(
        False, help="Score every clip whole, however long: one attention over all its "
        "patches, whose memory grows with the square of the clip's length (see "
        "docs/long_audio_and_limits.md).")
    window_batch: int = setting(
        WINDOW_BATCH, help="Windows (or clips) that go through the model at once: the "
        "memory of scoring is bounded by this many windows, whatever the clip's length.")

    def arguments(self):
        return dataclasses.asdict(self)


class ClipTooShortError(ValueError):
    """A clip shorter than one patch of the model."""


def audio_converter_of(model):
    """The model's audio converter; a clear error for a model saved without one."""
    if not isinstance(model, ASTClassifier):
        raise TypeError(f"expected a keras_astpe ASTClassifier (keras.saving.load_model of a "
                        f"model saved by the recipes), got {type(model).__name__}")
    if model.audio_converter is None:
        raise ValueError(
            "this model carries no audio converter (it was saved before models carried "
            "their front end), so it cannot score raw audio. Attach the front end it was "
            "trained with and save it again: model = keras_astpe.attach_audio_converter("
            "model, 'normalization_stats.json', 'classes.csv'); model.save('model.keras') "
            "(the statistics are in the training run's folder, the class list in its "
            "dataset's folder)")
    return model.audio_converter


def class_names_of(model):
    """The model's class names, or their indices as strings when it has none."""
    if model.class_names is not None:
        return list(model.class_names)
    return [str(index) for index in range(model.num_classes)]


def minimum_samples(model):
    """Fewest samples at the converter's rate that make one patch of the model's input: 1
    when the converter pads shorter clips with zeros to at least one patch (its
    `min_samples`)."""
    converter = audio_converter_of(model)
    one_patch = converter.num_samples(model.backbone.patch_size[0])
    if (getattr(converter, "min_samples", None) or 0) >= one_patch:
        return 1
    return one_patch


def trained_samples(model):
    """`(window, longest_whole)`: samples of the clips the model was trained on, and of the
    longest clip that gives the same patches (its last frames, short of a patch, are
    dropped), at the converter's rate.

    The training clip is the backbone's `num_frames` (992 frames, 158,960 samples for the
    presets) cut to whole patches; a clip up to `longest_whole` is scored exactly as its
    first `window` samples.
    """
    converter = audio_converter_of(model)
    backbone = model.backbone
    (patch, _), (stride, _) = backbone.patch_size, backbone.patch_stride
    used_frames = (backbone.grid_shape[0] - 1) * stride + patch
    return (converter.num_samples(used_frames),
            converter.num_samples(used_frames + stride) - 1)


@dataclasses.dataclass(frozen=True)
class Windows:
    """How clips are scored, in samples at the converter's rate (see `for_model`).

    A clip of at most `longest_whole` samples is scored whole (every clip when None); a
    longer one as the windows of `window` samples of `sliding_window_starts`, its scores
    aggregated by `aggregation` ("mean" or "max") and its embeddings averaged. `batch`
    windows (or whole clips) go through the model at once.
    """

    window: int | None = None
    hop: int | None = None
    longest_whole: int | None = None
    aggregation: str = "mean"
    batch: int = WINDOW_BATCH

    @classmethod
    def for_model(cls, model, settings=WindowSettings()):
        """The windows of `settings` (a `WindowSettings`) for `model`, checked.

        Default: windows of the model's trained clip length (`trained_samples`), every
        window. With `settings.window_seconds`, windows of that length for clips longer
        than it; with `settings.whole_clips`, every clip whole.
        """
        rate = audio_converter_of(model).sample_rate
        minimum = minimum_samples(model)
        if settings.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got "
                             f"{settings.aggregation!r}")
        if settings.window_batch < 1:
            raise ValueError(f"window_batch must be >= 1, got {settings.window_batch}")
        common = {"aggregation": settings.aggregation, "batch": settings.window_batch}
        if settings.whole_clips:
            if settings.window_seconds is not None or settings.hop_seconds is not None:
                raise ValueError("whole_clips scores every clip at once: it takes no "
                                 "window_seconds or hop_seconds")
            return cls(**common)
        if settings.window_seconds is None:
            window, longest_whole = trained_samples(model)
        else:
            window = longest_whole = round(float(settings.window_seconds) * rate)
            if window < minimum:
                raise ValueError(f"window_seconds={settings.window_seconds} is shorter than "
                                 f"one patch of the model: at least {minimum / rate:.3f} s")
        if settings.hop_seconds is None:
            hop = window
        else:
            hop = round(float(settings.hop_seconds) * rate)
            if not 1 <= hop <= window:
                raise ValueError(f"hop_seconds must be > 0 and <= the window "
                                 f"({window / rate:.3f} s) so that the windows cover the "
                                 f"clip, got {settings.hop_seconds}")
        return cls(window, hop, longest_whole, **common)

    def pieces(self, num_samples):
        """`(starts, length)`: what a clip of `num_samples` samples is scored as, the starts
        of its pieces (int64 numpy) and their common length: itself whole, or windows."""
        if self.longest_whole is None or num_samples <= self.longest_whole:
            return np.zeros([1], np.int64), num_samples
        return sliding_window_starts(num_samples, self.window, self.hop), self.window


def sliding_window_starts(num_samples, window, hop):
    """Starts of the windows over a clip longer than `window`: every `hop` samples, the last
    one moved back to end with the clip (all windows are whole, every sample is scored).

    `num_samples` is a number (`tag`: int64 numpy starts) or a TensorFlow scalar (the TF
    Serving graph): the same arithmetic.
    """
    if is_tensorflow(num_samples):
        ops = ops_for(num_samples)
        xp, num_samples = ops.numpy, ops.cast(num_samples, "int64")
    else:
        xp, num_samples = np, np.int64(num_samples)
    count = (num_samples - window + hop - 1) // hop + 1
    return xp.minimum(xp.arange(count, dtype="int64") * hop, num_samples - window)


def _waveform(audio, sample_rate, target_rate):
    """A path or an array -> mono float32 at `target_rate` (as the converters decode)."""
    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError("sample_rate is for a waveform; a file says its own rate")
        return audio_io.load_audio(audio, target_rate).waveform, os.fspath(audio)
    waveform = np.asarray(audio)
    if sample_rate is None:
        raise ValueError("a waveform needs its sample_rate, e.g. tag(model, waveform, "
                         "sample_rate=44100)")
    if waveform.dtype == np.int16:
        waveform = waveform.astype(np.float32) / 32768.0
    elif not np.issubdtype(waveform.dtype, np.floating):
        raise ValueError(f"expected float samples in [-1, 1] or int16 PCM, got "
                         f"{waveform.dtype}")
    waveform = waveform.astype(np.float32, copy=False)
    if waveform.ndim == 2 and waveform.shape[0] >= waveform.shape[1]:
        waveform = waveform.mean(axis=1, dtype=np.float32)  # as load_audio downmixes
    if waveform.ndim != 1:
        raise ValueError(f"expected a waveform [samples] or [samples, channels] (soundfile's "
                         f"layout), got shape {waveform.shape}")
    if not np.all(np.isfinite(waveform)):
        raise ValueError("the waveform contains NaN or Inf")
    return audio_io.resample(waveform, int(sample_rate), target_rate), "the waveform"


@dataclasses.dataclass(frozen=True)
class ScoredClip:
    """The scores of one clip: aggregated (`scores` `[num_classes]`) and per piece scored
    (`window_scores` `[pieces, num_classes]`, one row when the clip was scored whole), with
    the pieces' `starts` and `ends` in samples at `sample_rate`."""

    scores: np.ndarray
    window_scores: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    sample_rate: int


def score_clip(model, waveform, windows, progress=None):
    """Scores one mono waveform at the converter's rate as `windows` (a `Windows`) says: a
    `ScoredClip`.

    The pieces (the clip, or its windows) go through the model `windows.batch` at a time,
    so memory holds the waveform and one batch of pieces. `progress(done, total)` is called
    after each batch, with counts of pieces.
    """
    converter = audio_converter_of(model)
    waveform = np.asarray(waveform, np.float32)
    starts, length = windows.pieces(waveform.shape[0])
    outputs = []
    for first in range(0, len(starts), windows.batch):
        batch = np.stack([waveform[start:start + length]
                          for start in starts[first:first + windows.batch]])
        outputs.append(keras.ops.convert_to_numpy(model(converter(batch), training=False)))
        if progress is not None:
            progress(first + len(batch), len(starts))
    window_scores = np.concatenate(outputs).astype(np.float32, copy=False)
    aggregate = np.max if windows.aggregation == "max" else np.mean
    return ScoredClip(scores=aggregate(window_scores, axis=0), window_scores=window_scores,
                      starts=starts, ends=starts + length, sample_rate=converter.sample_rate)


def clip_scores(model, waveform, windows=None):
    """Class scores `[num_classes]` (numpy) of one mono waveform at the converter's rate,
    scored as `windows` says (default: the model's, `Windows.for_model`)."""
    if windows is None:
        windows = Windows.for_model(model)
    return score_clip(model, waveform, windows).scores


class ProgressBar:
    """A progress bar on stderr over the pieces of one clip, for `score_clip`.

    On a terminal the line is redrawn after each batch; elsewhere (a log file) one line is
    written when the clip is done. Nothing is shown for a clip of one batch.
    """

    def __init__(self, label, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done, total):
        if done == total and not self.shown:  # one batch
            return
        self.shown = True
        elapsed = time.monotonic() - self.started
        terminal = self.stream.isatty()
        if terminal:
            filled = int(30 * done / total)
            self.stream.write(f"\r{self.label}: [{'=' * filled}{' ' * (30 - filled)}] "
                              f"{done}/{total} windows, {elapsed:.0f} s")
        if done == total:
            if not terminal:
                self.stream.write(f"{self.label}: {total} windows in {elapsed:.1f} s")
            self.stream.write("\n")
        self.stream.flush()


def check_length(model, waveform, what):
    """Raises `ClipTooShortError` (naming `what`) for a waveform at the converter's rate
    shorter than one patch of the model."""
    rate, minimum = audio_converter_of(model).sample_rate, minimum_samples(model)
    if waveform.shape[0] < minimum:
        raise ClipTooShortError(
            f"{what}: {waveform.shape[0] / rate:.3f} s is too short: the model needs at "
            f"least {minimum} samples at {rate} Hz ({minimum / rate:.3f} s, one patch)")


def tag(model, audio, *, sample_rate=None, top_k=None, progress=False, **window_settings):
    """Scores one clip: `[(class name, score), ...]`, highest score first.

    Args:
        model: a classifier loaded with `keras.saving.load_model` (it carries its front end
            and class names; see `attach_audio_converter` for older models).
        audio: a file path (any format `keras_astpe.data.audio_io.load_audio` reads), or a
            waveform (numpy: float in [-1, 1] or int16, `[samples]` or
            `[samples, channels]`) with its `sample_rate`.
        top_k: keep the `top_k` best classes (default: all).
        progress: show a progress bar over the windows on stderr (`ProgressBar`).
        **window_settings: the fields of `WindowSettings`: `window_seconds`,
            `hop_seconds`, `aggregation`, `whole_clips`, `window_batch`. By default a clip
            longer than the model's trained clip length is scored as windows of that
            length (no overlap), their scores averaged.
    """
    converter = audio_converter_of(model)
    windows = Windows.for_model(model, WindowSettings(**window_settings))
    waveform, what = _waveform(audio, sample_rate, converter.sample_rate)
    check_length(model, waveform, what)
    values = score_clip(model, waveform, windows,
                        ProgressBar(what) if progress else None).scores
    order = np.argsort(-values, kind="stable")[:top_k]
    names = class_names_of(model)
    return [(names[i], float(values[i])) for i in order]


def read_class_names(path):
    """Class names from a CSV with a header row and the name in the last column, one row
    per class in index order (`classes.csv` of the converters, AudioSet's
    `class_labels_indices.csv`)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and one row per class")
    return [row[-1] for row in rows[1:]]


def attach_audio_converter(model, stats, class_names=None):
    """A copy of `model` (sharing its weights) that carries its front end and class names.

    For classifiers saved before models carried them: `stats` is the run's
    `NormalizationStats` or the path of its `normalization_stats.json` (or of the folder
    holding it); the front-end settings recorded there are used (the paper's when none are).
    `class_names`: a list, or the path of the dataset's class CSV (`classes.csv`,
    `class_labels_indices.csv`). Save the result to get a model that scores raw audio.
    """
    if not isinstance(model, ASTClassifier):
        raise TypeError(f"expected a keras_astpe ASTClassifier, got {type(model).__name__}")
    if not isinstance(stats, NormalizationStats):
        stats = NormalizationStats.load(stats)
    if isinstance(class_names, (str, os.PathLike)):
        class_names = read_class_names(class_names)
    if class_names is None:
        class_names = model.class_names
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of "
                         f"{model.num_classes} classes")
    converter = LogMelAudioConverter(stats.frontend or FrontEndConfig(), stats)
    attached = ASTClassifier(model.backbone, model.num_classes, activation=model.activation,
                             audio_converter=converter, class_names=class_names,
                             name=model.name)
    attached.head.set_weights(model.head.get_weights())
    return attached
