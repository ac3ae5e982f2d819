"""Scoring raw audio with a loaded classifier, on any backend.

    model = keras.saving.load_model("model.keras")
    keras_astpe.tag(model, "dog.wav")       # [("Dog", 0.91), ("Bark", 0.40), ...]

The model carries its front end (`model.audio_converter`, see
`keras_astpe.models.audio_converter`) and its `class_names`, so nothing else is needed. A
file is decoded by `keras_astpe.data.audio_io.load_audio` (any format, mono, resampled with
SciPy's polyphase filter), as the TFRecord converters do; the features are those of the
tf.data training pipeline (the same function).

Clips of any length from one patch up are scored as a whole by default (the model adapts
its positional encoding to the length), which is also what the TF Serving export
(`keras_astpe.serving`) does by default. With `window_seconds`, a clip longer than the
window is scored as sliding windows (`sliding_window_starts`) whose scores are aggregated
(mean or max); the export offers the same option and computes the same windows.
"""

import csv
import dataclasses
import os

import keras
import numpy as np

from keras_astpe._startup import tf
from keras_astpe.cli import setting
from keras_astpe.data import audio_io
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.normalization import NormalizationStats

AGGREGATIONS = ("mean", "max")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowSettings:
    """Sliding-window scoring of long clips: the flags of `recipes/predict.py` and
    `recipes/export.py`, and the keyword arguments of `tag` and `export_saved_model`."""

    window_seconds: float | None = setting(
        None, help="Score clips longer than this as sliding windows (default: whole clips).")
    hop_seconds: float | None = setting(
        None, help="Step between windows (default: --window_seconds).")
    aggregation: str = setting("mean", choices=AGGREGATIONS,
                               help="How window scores are combined (in the graph, for an "
                               "export).")

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
    """Fewest samples at the converter's rate that make one patch of the model's input."""
    return audio_converter_of(model).num_samples(model.backbone.patch_size[0])


@dataclasses.dataclass(frozen=True)
class Windows:
    """How a clip is scored: whole (`window` None) or as sliding windows, in samples.

    Built by `Windows.create` from seconds. A clip no longer than `window` is scored whole;
    a longer one as the windows of `sliding_window_starts`, its scores aggregated by
    `aggregation` ("mean" or "max") and its embeddings averaged.
    """

    window: int | None = None
    hop: int | None = None
    aggregation: str = "mean"

    @classmethod
    def create(cls, window_seconds, hop_seconds, aggregation, *, sample_rate, minimum):
        """Checks the settings; `minimum`: the fewest samples the model takes."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if window_seconds is None:
            if hop_seconds is not None:
                raise ValueError("hop_seconds needs window_seconds (without a window the "
                                 "whole clip is scored at once)")
            return cls(aggregation=aggregation)
        window = round(float(window_seconds) * sample_rate)
        if window < minimum:
            raise ValueError(f"window_seconds={window_seconds} is shorter than one patch of "
                             f"the model: at least {minimum / sample_rate:.3f} s")
        hop = window if hop_seconds is None else round(float(hop_seconds) * sample_rate)
        if not 1 <= hop <= window:
            raise ValueError(f"hop_seconds must be > 0 and <= window_seconds "
                             f"({window_seconds}) so that the windows cover the clip, got "
                             f"{hop_seconds}")
        return cls(window, hop, aggregation)


def sliding_window_starts(num_samples, window, hop):
    """Starts of the windows over a clip longer than `window`: every `hop` samples, the last
    one moved back to end with the clip (all windows are whole, every sample is scored).

    TensorFlow ops, so that `tag` and the TF Serving graph compute the same windows.
    """
    num_samples = tf.cast(num_samples, tf.int64)
    count = (num_samples - window + hop - 1) // hop + 1
    return tf.minimum(tf.range(count, dtype=tf.int64) * hop, num_samples - window)


def sliding_windows(waveforms, window, hop):
    """`[batch, samples]` (samples > window) -> `[batch, windows, window]`."""
    starts = sliding_window_starts(tf.shape(waveforms, out_type=tf.int64)[1], window, hop)
    return tf.gather(waveforms, starts[:, None] + tf.range(window, dtype=tf.int64), axis=1)


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


def clip_scores(model, waveform, windows=Windows()):
    """Class scores `[num_classes]` (numpy) of one mono waveform at the converter's rate."""
    converter = audio_converter_of(model)
    waveform = np.asarray(waveform, np.float32)[None]
    if windows.window is not None and waveform.shape[1] > windows.window:
        waveform = sliding_windows(tf.constant(waveform), windows.window, windows.hop)[0]
    outputs = keras.ops.convert_to_numpy(model(converter(waveform), training=False))
    return outputs.max(axis=0) if windows.aggregation == "max" else outputs.mean(axis=0)


def tag(model, audio, *, sample_rate=None, top_k=None, window_seconds=None,
        hop_seconds=None, aggregation="mean"):
    """Scores one clip: `[(class name, score), ...]`, highest score first.

    Args:
        model: a classifier loaded with `keras.saving.load_model` (it carries its front end
            and class names; see `attach_audio_converter` for older models).
        audio: a file path (any format `keras_astpe.data.audio_io.load_audio` reads), or a
            waveform (numpy: float in [-1, 1] or int16, `[samples]` or
            `[samples, channels]`) with its `sample_rate`.
        top_k: keep the `top_k` best classes (default: all).
        window_seconds, hop_seconds, aggregation: score a clip longer than `window_seconds`
            as windows every `hop_seconds` (default: the window), aggregated by "mean" or
            "max". Default: the whole clip at once, as the TF Serving export does.
    """
    converter = audio_converter_of(model)
    minimum = minimum_samples(model)
    windows = Windows.create(window_seconds, hop_seconds, aggregation,
                             sample_rate=converter.sample_rate, minimum=minimum)
    waveform, what = _waveform(audio, sample_rate, converter.sample_rate)
    if waveform.shape[0] < minimum:
        raise ClipTooShortError(
            f"{what}: {waveform.shape[0] / converter.sample_rate:.3f} s is too short: the "
            f"model needs at least {minimum} samples at {converter.sample_rate} Hz "
            f"({minimum / converter.sample_rate:.3f} s, one patch)")
    values = clip_scores(model, waveform, windows)
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
