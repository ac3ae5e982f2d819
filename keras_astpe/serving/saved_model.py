"""TF Serving export: a SavedModel that takes audio and needs neither Keras nor keras_astpe.

`export_saved_model(model, "saved_models/serving/ast/1")` writes one version folder of TF
Serving's layout `<base>/<name>/<version>/` (`saved_model.pb`, `variables/`,
`assets/class_names.txt`, one class name per line in output order) with two signatures:

- `serving_default`: `waveform`, float32 `[batch, samples]`, mono at 16 kHz in [-1, 1], any
  length from one patch (0.335 s for the paper's front end) up.
- `serving_wav`: `wav_bytes`, string `[batch]`, the bytes of WAV files (16-bit PCM or 32-bit
  float, any number of channels, at 8, 11.025, 16, 22.05, 24, 32, 44.1 or 48 kHz), decoded
  (`wav.decode_wav`), averaged to mono and resampled to 16 kHz (`resample`) in the graph, as
  `keras_astpe.data.audio_io` does; files of different lengths may share a request.

Both return `scores` `[batch, num_classes]` (the model's sigmoid or softmax) and `embedding`
`[batch, hidden_dim]`, the final [CLS] state. The features are computed in the graph by the
model's audio converter, with the function the tf.data training pipeline uses.

By default a clip is scored whole, as `keras_astpe.tag` does. With `window_seconds`, a clip
longer than the window is scored as sliding windows every `hop_seconds`
(`keras_astpe.inference.sliding_window_starts`), its scores aggregated by `aggregation`
(mean or max) and its embeddings averaged, inside the graph.

A bad request is an InvalidArgument error from the signature that says what was expected
(see `_check_waveforms` and `wav.decode_wav`). The export runs under the TensorFlow backend;
from JAX or PyTorch it runs in a subprocess with `KERAS_BACKEND=tensorflow` on the saved
`.keras` file, which is backend-agnostic.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import keras

from keras_astpe._startup import tf, without_jax_xla_cpu_flags
from keras_astpe.inference import (
    Windows,
    audio_converter_of,
    class_names_of,
    minimum_samples,
    sliding_windows,
)
from keras_astpe.serving import resample, wav

CLASS_NAMES_FILE = "class_names.txt"
# A float waveform peaking above this is not audio in [-1, 1] (e.g. int16 PCM sent as
# numbers): refused rather than scored as a different sound. Up to 4 (12 dB over full
# scale) is accepted, for float audio that overshoots a little.
MAX_PEAK = 4.0
_SUBPROCESS_ERRORS = {error.__name__: error for error in (
    ValueError, TypeError, FileExistsError, FileNotFoundError, NotADirectoryError)}


def serving_module(model, windows, class_names_path):
    """The exported object: the model's variables, the class names (an asset) and the two
    signatures, `serving_default` and `serving_wav`."""
    graphs = _Signatures(model, windows)
    module = tf.Module(name="keras_astpe_serving")
    module.class_names = tf.saved_model.Asset(class_names_path)
    module.serving_default = tf.function(
        graphs.serve_waveform, autograph=False,
        input_signature=[tf.TensorSpec(None, tf.float32, name="waveform")])
    module.serving_wav = tf.function(
        graphs.serve_wav, autograph=False,
        input_signature=[tf.TensorSpec(None, tf.string, name="wav_bytes")])
    # The TensorFlow variables the graphs read (not Keras' wrappers of them): what a TF1
    # session (TF Serving, saved_model_cli) restores before it runs a signature.
    used = {}
    for function in (module.serving_default, module.serving_wav):
        for variable in function.get_concrete_function().variables:
            used.setdefault(id(variable), variable)
    module.model_variables = list(used.values())
    return module


class _Signatures:
    """The graphs of the signatures: checks, decoding, windows and the model."""

    def __init__(self, model, windows):
        self._model = model
        self._converter = audio_converter_of(model)
        self._windows = windows
        self._minimum = minimum_samples(model)

    # === Scoring ===

    def _score_clips(self, waveforms):
        """`[batch, samples]` -> scores and embeddings (the state the head reads: [CLS], or
        for AST the mean of [CLS] and the distillation token) of each clip, whole."""
        features = self._converter.features(waveforms)
        embedding = self._model.pool(self._model.backbone(features, training=False))
        scores = self._model.classify(embedding)
        return {"scores": tf.cast(scores, tf.float32),
                "embedding": tf.cast(embedding, tf.float32)}

    def _score_windows(self, waveforms):
        window, hop = self._windows.window, self._windows.hop
        windows = sliding_windows(waveforms, window, hop)
        shape = tf.shape(windows)
        outputs = self._score_clips(tf.reshape(windows, [-1, window]))
        scores = tf.reshape(outputs["scores"], [shape[0], shape[1], -1])
        embedding = tf.reshape(outputs["embedding"], [shape[0], shape[1], -1])
        aggregate = tf.reduce_max if self._windows.aggregation == "max" else tf.reduce_mean
        return {"scores": aggregate(scores, axis=1),
                "embedding": tf.reduce_mean(embedding, axis=1)}

    def _score(self, waveforms):
        """Whole clips, or sliding windows for clips longer than the window."""
        if self._windows.window is None:
            return self._score_clips(waveforms)
        return tf.cond(tf.shape(waveforms)[1] <= self._windows.window,
                       lambda: self._score_clips(waveforms),
                       lambda: self._score_windows(waveforms))

    # === Signatures ===

    def _needs(self):
        rate = self._converter.sample_rate
        return (f"the model needs at least {self._minimum} samples at {rate} Hz "
                f"({self._minimum / rate:.3f} s: one patch)")

    def _check_waveforms(self, waveform):
        rate = self._converter.sample_rate
        expected = f"expected a float32 tensor [batch, samples] of mono audio at {rate} Hz"
        waveform = wav.checked(waveform, [(tf.equal(tf.rank(waveform), 2), tf.strings.format(
            "waveform: " + expected + ", got shape {}", tf.shape(waveform)))])
        # A reshape that cannot fail, not `ensure_shape`: graph optimization checks the latter
        # against the shape fed before the assertion above can run.
        waveform = tf.reshape(waveform, [-1, tf.reduce_prod(tf.shape(waveform)[1:])])
        shape = tf.shape(waveform)
        peak = tf.reduce_max(tf.abs(waveform))
        return wav.checked(waveform, [
            (shape[0] >= 1, tf.constant(f"waveform: the batch is empty; {expected}")),
            (shape[1] >= 1, tf.constant(f"waveform: the waveforms are empty (0 samples); "
                                        f"{expected}")),
            (shape[1] >= self._minimum, tf.strings.format(
                "waveform: {} samples is too short: " + self._needs(), shape[1])),
            (tf.reduce_all(tf.math.is_finite(waveform)), tf.constant(
                "waveform: the samples contain NaN or Inf")),
            (peak <= MAX_PEAK, tf.strings.format(
                "waveform: samples reach {}; expected float samples in [-1, 1] (divide int16 "
                "PCM by 32768)", peak)),
        ])

    def serve_waveform(self, waveform):
        return self._score(self._check_waveforms(waveform))

    def _decode(self, contents, index):
        """One WAV file -> mono float32 at the converter's rate, checked."""
        samples, rate = wav.decode_wav(contents, index)
        rates = resample.SUPPORTED_RATES
        supported = ", ".join(str(r) for r in rates)
        rate = wav.checked(rate, [(tf.reduce_any(tf.equal(rate, rates)), tf.strings.format(
            "wav_bytes[{}]: a sample rate of {} Hz is not supported; expected one of "
            + supported + " Hz", (index, rate)))])
        mono = _downmix(samples)
        waveform = resample.resample_any(mono, rate, self._converter.sample_rate)
        length = tf.shape(waveform)[0]
        return wav.checked(waveform, [(length >= self._minimum, tf.strings.format(
            "wav_bytes[{}]: {} samples at " + str(self._converter.sample_rate)
            + " Hz after resampling is too short: " + self._needs(), (index, length)))])

    def serve_wav(self, wav_bytes):
        wav_bytes = wav.checked(wav_bytes, [(tf.equal(tf.rank(wav_bytes), 1), tf.strings.format(
            "wav_bytes: expected a string tensor [batch] of WAV files, got shape {}",
            tf.shape(wav_bytes)))])
        wav_bytes = tf.reshape(wav_bytes, [-1])  # see _check_waveforms
        batch = tf.shape(wav_bytes)[0]
        wav_bytes = wav.checked(wav_bytes, [(batch >= 1, tf.constant(
            "wav_bytes: the batch is empty; expected a string tensor [batch] of WAV files"))])
        waveforms = tf.map_fn(
            lambda item: self._decode(*item), (wav_bytes, tf.range(batch)),
            fn_output_signature=tf.RaggedTensorSpec([None], tf.float32, ragged_rank=0))
        lengths = waveforms.row_lengths()

        def one_by_one():
            def score_one(index):
                outputs = self._score(waveforms[index][None])
                return {key: value[0] for key, value in outputs.items()}

            return tf.map_fn(score_one, tf.range(batch), fn_output_signature={
                "scores": tf.TensorSpec([self._model.num_classes], tf.float32),
                "embedding": tf.TensorSpec([self._model.backbone.hidden_dim], tf.float32)})

        return tf.cond(tf.reduce_all(tf.equal(lengths, lengths[0])),
                       lambda: self._score(waveforms.to_tensor()), one_by_one)


def _downmix(samples):
    """`[frames, channels]` -> their mean `[frames]`, as `audio_io.load_audio` downmixes.

    A sum by matmul, then one division (what numpy's mean does): `tf.reduce_mean` over an
    inner axis of 2 channels costs 1.5x more; mono is only a reshape.
    """
    channels = tf.shape(samples)[1]
    return tf.cond(
        tf.equal(channels, 1), lambda: tf.reshape(samples, [-1]),
        lambda: tf.reshape(tf.matmul(samples, tf.ones(tf.stack([channels, 1]))), [-1])
        / tf.cast(channels, tf.float32))


def export_saved_model(model, export_dir, *, window_seconds=None, hop_seconds=None,
                       aggregation="mean", overwrite=False):
    """Writes the TF Serving SavedModel of a classifier to `export_dir`; returns its path.

    Args:
        model: a classifier with its audio converter (`keras.saving.load_model` of a model
            saved by the recipes), or the path of its `.keras` file.
        export_dir: the version folder, `<base>/<name>/<version>` for TF Serving. It
            appears complete or not at all (written beside it, then renamed), so a server
            watching `<base>/<name>` never loads half an export.
        window_seconds, hop_seconds, aggregation: score clips longer than `window_seconds`
            as windows every `hop_seconds` (default: the window), aggregated by "mean" or
            "max". Default: whole clips.
        overwrite: replace an existing `export_dir`.
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    options = {"window_seconds": window_seconds, "hop_seconds": hop_seconds,
               "aggregation": aggregation, "overwrite": overwrite}
    if os.path.exists(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} already exists: choose another version, or "
                              f"overwrite it (overwrite=True, --overwrite)")
    if keras.backend.backend() != "tensorflow":
        return _export_in_subprocess(model, export_dir, options)
    if isinstance(model, (str, os.PathLike)):
        model = _load(model)
    converter = audio_converter_of(model)
    windows = Windows.create(window_seconds, hop_seconds, aggregation,
                             sample_rate=converter.sample_rate, minimum=minimum_samples(model))
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(export_dir)}-")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            names_path = os.path.join(tmp, CLASS_NAMES_FILE)
            with open(names_path, "w", encoding="utf-8") as f:
                f.writelines(f"{name}\n" for name in class_names_of(model))
            module = serving_module(model, windows, names_path)
            tf.saved_model.save(module, staging, signatures={
                name: getattr(module, name).get_concrete_function()
                for name in ("serving_default", "serving_wav")})
        os.chmod(staging, 0o777 & ~_umask())
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _load(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: model file not found")
    return keras.saving.load_model(path, compile=False)


def _export_in_subprocess(model, export_dir, options):
    """The export under the TensorFlow backend, in a child process, from the `.keras` file."""
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
        else:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
        request = json.dumps({"model": path, "export_dir": export_dir, **options})
        child = ("import sys; from keras_astpe.serving.saved_model import _child; "
                 "_child(sys.argv[1])")
        command = [sys.executable, "-c", child, request]
        env = dict(without_jax_xla_cpu_flags(os.environ), KERAS_BACKEND="tensorflow")
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        try:
            error = json.loads(lines[-1])
        except ValueError:
            raise RuntimeError(f"the export under the TensorFlow backend failed (exit "
                               f"{result.returncode}): {' | '.join(lines[-5:])}") from None
        raise _SUBPROCESS_ERRORS.get(error["type"], RuntimeError)(error["message"])
    return export_dir


def _child(request):
    """Entry point of `_export_in_subprocess`: the last line of stderr is a JSON error."""
    request = json.loads(request)
    try:
        export_saved_model(request.pop("model"), request.pop("export_dir"), **request)
    except Exception as error:  # reported to the parent, which raises it there
        print(json.dumps({"type": type(error).__name__, "message": str(error)}),
              file=sys.stderr)
        sys.exit(1)
