"""TF Serving export: a SavedModel that takes audio and needs neither Keras nor keras_astpe.

`export_saved_model(model, "saved_models/serving/ast/1")` writes one version folder of TF
Serving's layout `<base>/<name>/<version>/` (`saved_model.pb`, `variables/`,
`assets/class_names.txt`, one class name per line in output order) with two signatures:

- `serving_default`: `waveform`, float32 `[batch, samples]`, mono at 16 kHz in [-1, 1], any
  length from one patch (0.335 s for the paper's front end) up.
- `serving_wav`: `wav_bytes`, string `[batch]`, the bytes of WAV files (16-bit PCM or 32-bit
  float, any number of channels, at 8, 11.025, 16, 22.05, 24, 32, 44.1 or 48 kHz), decoded
  (`wav`), averaged to mono and resampled to 16 kHz (`resample`) in the graph, as
  `keras_astpe.data.audio_io` does; files of different lengths may share a request.

Both return `scores` `[batch, num_classes]` (the model's sigmoid or softmax) and `embedding`
`[batch, hidden_dim]`, the final [CLS] state. The features are computed in the graph by the
model's audio converter, with the function the tf.data training pipeline uses.

Clips are scored as `keras_astpe.tag` scores them (`keras_astpe.inference.Windows`): whole
up to the model's trained clip length, longer ones as sliding windows of that length
(`window_seconds`, `hop_seconds` change them), their scores aggregated by `aggregation`
(mean or max) and their embeddings averaged, inside the graph. The windows (or clips) go
through the model `window_batch` at a time in a loop, so the memory of a request grows
linearly with its audio, not with the square of a clip's length; `whole_clips` scores every
clip at once instead.

A request is refused beyond the export's `ServingLimits` (clips per request, seconds per
clip and per request), checked from the shapes or the WAV headers before any audio is
decoded or scored. A bad request is an InvalidArgument error from the signature that names
the input and says what was expected or which limit it passed (see `_check_waveforms`,
`_check_wav_headers` and `wav.read_header`). The export runs under the TensorFlow backend;
from JAX or PyTorch it runs in a subprocess with `KERAS_BACKEND=tensorflow` on the saved
`.keras` file, which is backend-agnostic.
"""

import dataclasses
import os
import shutil
import tempfile

import keras

from keras_astpe._startup import tf
from keras_astpe.cli import setting
from keras_astpe.inference import (
    Windows,
    WindowSettings,
    audio_converter_of,
    class_names_of,
    minimum_samples,
    sliding_window_starts,
)
from keras_astpe.serving import resample, wav
from keras_astpe.serving.tensorflow_process import in_tensorflow_process

CLASS_NAMES_FILE = "class_names.txt"
# A float waveform (or float WAV file) peaking above this is not audio in [-1, 1] (e.g. int16
# PCM sent as numbers): refused rather than scored as a different sound. Up to 4 (12 dB over full
# scale) is accepted, for float audio that overshoots a little.
MAX_PEAK = 4.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServingLimits:
    """What one request to the export may hold, beyond which it is refused (InvalidArgument,
    naming the input and the limit) before its audio is decoded or scored: the flags of
    `recipes/export.py` and keyword arguments of `export_saved_model`. The defaults are
    far above a normal request; a deployment sizes them to its machine (memory and time
    grow linearly with the seconds of audio of a request)."""

    max_clip_seconds: float = setting(
        7200.0, help="Longest clip a request may hold, in seconds.")
    max_request_seconds: float = setting(
        7200.0, help="Most seconds of audio, all clips together, a request may hold.")
    max_batch: int = setting(1024, help="Most clips (waveforms or WAV files) per request.")

    def __post_init__(self):
        for name in ("max_clip_seconds", "max_request_seconds", "max_batch"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def arguments(self):
        return dataclasses.asdict(self)


def serving_module(model, windows, class_names_path, limits=ServingLimits()):
    """The exported object: the model's variables, the class names (an asset) and the two
    signatures, `serving_default` and `serving_wav`."""
    graphs = _Signatures(model, windows, limits)
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


def score_clips(model, converter, waveforms):
    """`[batch, samples]` -> float32 `scores` and `embedding` (the state the head reads:
    [CLS], or for AST the mean of [CLS] and the distillation token) of each clip whole, its
    features computed by `converter` in the graph."""
    embedding = model.pool(model.backbone(converter.features(waveforms), training=False,
                                          prefix_only=True))
    return {"scores": tf.cast(model.classify(embedding), tf.float32),
            "embedding": tf.cast(embedding, tf.float32)}


def _seconds(value):
    """A duration for a message: seconds rounded to 0.01, as float64."""
    return tf.round(tf.cast(value, tf.float64) * 100.0) / 100.0


class _Signatures:
    """The graphs of the signatures: checks, decoding, windows and the model."""

    def __init__(self, model, windows, limits):
        self._model = model
        self._converter = audio_converter_of(model)
        self._windows = windows
        self._limits = limits
        self._minimum = minimum_samples(model)

    # === Scoring ===

    def _score(self, waveforms):
        """Clips of one length `[batch, samples]` -> their scores and embeddings.

        Each clip is cut into pieces as `Windows.pieces` does (itself, or its windows);
        the pieces of all clips go through the model `windows.batch` at a time in a loop
        that runs one step at a time, and are aggregated per clip.
        """
        windows = self._windows
        shape = tf.shape(waveforms, out_type=tf.int64)
        clips, length = shape[0], shape[1]
        if windows.longest_whole is None:
            starts, piece = tf.zeros([1], tf.int64), length
        else:
            whole = length <= windows.longest_whole
            starts = tf.cond(whole, lambda: tf.zeros([1], tf.int64),
                             lambda: sliding_window_starts(length, windows.window, windows.hop))
            piece = tf.where(whole, length, windows.window)
        per_clip = tf.size(starts, out_type=tf.int64)
        count = clips * per_clip
        steps = tf.cast((count + windows.batch - 1) // windows.batch, tf.int32)
        flat = tf.reshape(waveforms, [-1])
        offsets = tf.range(piece)
        num_classes, hidden_dim = self._model.num_classes, self._model.backbone.hidden_dim

        def windows_of(index):
            begins = index // per_clip * length + tf.gather(starts, index % per_clip)
            return tf.gather(flat, begins[:, None] + offsets[None])

        def body(step, scores, embeddings):
            first = tf.cast(step, tf.int64) * windows.batch
            last = tf.minimum(first + windows.batch, count)
            # Whole clips are rows of the batch: a slice (the batch itself when it fits in
            # one step), no gather.
            pieces = tf.cond(per_clip == 1,
                             lambda: waveforms[first:last],
                             lambda: windows_of(tf.range(first, last)))
            outputs = score_clips(self._model, self._converter, pieces)
            return (step + 1, scores.write(step, outputs["scores"]),
                    embeddings.write(step, outputs["embedding"]))

        def array(width):
            return tf.TensorArray(tf.float32, size=steps, infer_shape=False,
                                  element_shape=tf.TensorShape([None, width]))

        _, scores, embeddings = tf.while_loop(
            lambda step, *_: step < steps, body,
            (tf.constant(0), array(num_classes), array(hidden_dim)), parallel_iterations=1)
        scores = tf.reshape(scores.concat(), tf.stack([clips, per_clip, num_classes]))
        embeddings = tf.reshape(embeddings.concat(), tf.stack([clips, per_clip, hidden_dim]))
        aggregate = tf.reduce_max if windows.aggregation == "max" else tf.reduce_mean
        return {"scores": aggregate(scores, axis=1),
                "embedding": tf.reduce_mean(embeddings, axis=1)}

    # === Signatures ===

    def _needs(self):
        rate = self._converter.sample_rate
        return (f"the model needs at least {self._minimum} samples at {rate} Hz "
                f"({self._minimum / rate:.3f} s: one patch)")

    def _batch_limit(self, name, batch, what):
        limit = self._limits.max_batch
        return (batch <= limit, tf.strings.format(
            f"{name}: a batch of {{}} {what} is over the limit of {limit} per request "
            f"(max_batch, set at export)", batch))

    def _request_limit(self, name, seconds, what):
        limit = self._limits.max_request_seconds
        return (seconds <= limit, tf.strings.format(
            f"{name}: the {what} hold {{}} s of audio, over the limit of {limit:g} s per "
            f"request (max_request_seconds, set at export)", _seconds(seconds)))

    def _check_waveforms(self, waveform):
        rate = self._converter.sample_rate
        expected = f"expected a float32 tensor [batch, samples] of mono audio at {rate} Hz"
        waveform = wav.checked(waveform, [(tf.equal(tf.rank(waveform), 2), tf.strings.format(
            "waveform: " + expected + ", got shape {}", tf.shape(waveform)))])
        # A reshape that cannot fail, not `ensure_shape`: graph optimization checks the latter
        # against the shape fed before the assertion above can run.
        waveform = tf.reshape(waveform, [-1, tf.reduce_prod(tf.shape(waveform)[1:])])
        shape = tf.shape(waveform, out_type=tf.int64)
        seconds = tf.cast(shape[1], tf.float64) / rate
        limit = self._limits.max_clip_seconds
        waveform = wav.checked(waveform, [
            (shape[0] >= 1, tf.constant(f"waveform: the batch is empty; {expected}")),
            (shape[1] >= 1, tf.constant(f"waveform: the waveforms are empty (0 samples); "
                                        f"{expected}")),
            (shape[1] >= self._minimum, tf.strings.format(
                "waveform: {} samples is too short: " + self._needs(), shape[1])),
            self._batch_limit("waveform", shape[0], "waveforms"),
            (seconds <= limit, tf.strings.format(
                f"waveform: waveforms of {{}} s are over the limit of {limit:g} s per "
                f"clip (max_clip_seconds, set at export)", _seconds(seconds))),
            self._request_limit("waveform", tf.cast(shape[0], tf.float64) * seconds,
                                "waveforms"),
        ])
        peak = tf.maximum(tf.reduce_max(waveform), -tf.reduce_min(waveform))
        return wav.checked(waveform, [
            (tf.reduce_all(tf.math.is_finite(waveform)), tf.constant(
                "waveform: the samples contain NaN or Inf")),
            (peak <= MAX_PEAK, tf.strings.format(
                "waveform: samples reach {}; expected float samples in [-1, 1] (divide int16 "
                "PCM by 32768)", peak)),
        ])

    def serve_waveform(self, waveform):
        return self._score(self._check_waveforms(waveform))

    def _check_wav_headers(self, wav_bytes, headers):
        """The headers of a request's files, after the rate and length limits: every file's
        rate supported, no file longer than `max_clip_seconds`, all of them together no
        longer than `max_request_seconds`."""
        rates = resample.SUPPORTED_RATES
        supported = tf.reduce_any(tf.equal(headers.rate[:, None], rates), axis=1)
        seconds = (tf.cast(headers.frames, tf.float64)
                   / tf.cast(tf.maximum(headers.rate, 1), tf.float64))
        limit = self._limits.max_clip_seconds
        unsupported = tf.argmin(tf.cast(supported, tf.int32))
        longest = tf.argmax(seconds)
        return wav.checked(headers, [
            (tf.reduce_all(supported), tf.strings.format(
                "wav_bytes[{}]: a sample rate of {} Hz is not supported; expected one of "
                + ", ".join(str(r) for r in rates) + " Hz",
                (unsupported, headers.rate[unsupported]))),
            (seconds[longest] <= limit, tf.strings.format(
                f"wav_bytes[{{}}]: {{}} s of audio is over the limit of {limit:g} s per clip "
                f"(max_clip_seconds, set at export)", (longest, _seconds(seconds[longest])))),
            self._request_limit("wav_bytes", tf.reduce_sum(seconds), "files"),
        ])

    def _decode(self, contents, header, index):
        """One WAV file -> mono float32 at the converter's rate, checked."""
        samples = wav.read_samples(contents, header, index)
        peak = tf.cond(header.is_float32,  # 16-bit samples are in [-1, 1)
                       lambda: tf.maximum(tf.reduce_max(samples), -tf.reduce_min(samples)),
                       lambda: tf.constant(1.0))
        samples = wav.checked(samples, [(peak <= MAX_PEAK, tf.strings.format(
            "wav_bytes[{}]: the samples of the WAV file reach {}; expected float samples in "
            "[-1, 1]", (index, peak)))])
        waveform = resample.resample_any(_downmix(samples), header.rate,
                                         self._converter.sample_rate)
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
        wav_bytes = wav.checked(wav_bytes, [
            (batch >= 1, tf.constant(
                "wav_bytes: the batch is empty; expected a string tensor [batch] of WAV "
                "files")),
            self._batch_limit("wav_bytes", batch, "files"),
        ])
        indices = tf.range(batch)
        headers = tf.map_fn(lambda item: wav.read_header(*item), (wav_bytes, indices),
                            fn_output_signature=wav.header_spec())
        headers = self._check_wav_headers(wav_bytes, wav.WavHeader(*headers))

        def one_file():  # decoded in place: no copy into a batch
            header = wav.WavHeader(*[field[0] for field in headers])
            return self._score(self._decode(wav_bytes[0], header, tf.constant(0))[None])

        def several_files():
            waveforms = tf.map_fn(
                lambda item: self._decode(item[0], wav.WavHeader(*item[1]), item[2]),
                (wav_bytes, tuple(headers), indices),
                fn_output_signature=tf.RaggedTensorSpec([None], tf.float32, ragged_rank=0))
            lengths = waveforms.row_lengths()

            def one_by_one():
                def score_one(index):
                    outputs = self._score(waveforms[index][None])
                    return {key: value[0] for key, value in outputs.items()}

                return tf.map_fn(score_one, tf.range(batch), parallel_iterations=1,
                                 fn_output_signature={
                                     "scores": tf.TensorSpec([self._model.num_classes],
                                                             tf.float32),
                                     "embedding": tf.TensorSpec(
                                         [self._model.backbone.hidden_dim], tf.float32)})

            return tf.cond(tf.reduce_all(tf.equal(lengths, lengths[0])),
                           lambda: self._score(waveforms.to_tensor()), one_by_one)

        return tf.cond(tf.equal(batch, 1), one_file, several_files)


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


def export_saved_model(model, export_dir, *, overwrite=False, **settings):
    """Writes the TF Serving SavedModel of a classifier to `export_dir`; returns its path.

    Args:
        model: a classifier with its audio converter (`keras.saving.load_model` of a model
            saved by the recipes), or the path of its `.keras` file.
        export_dir: the version folder, `<base>/<name>/<version>` for TF Serving. It
            appears complete or not at all (written beside it, then renamed), so a server
            watching `<base>/<name>` never loads half an export.
        overwrite: replace an existing `export_dir`.
        **settings: the fields of `keras_astpe.inference.WindowSettings`
            (`window_seconds`, `hop_seconds`, `aggregation`, `whole_clips`,
            `window_batch`: by default windows of the model's trained clip length, their
            scores averaged) and of `ServingLimits` (`max_clip_seconds`,
            `max_request_seconds`, `max_batch`).
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    window_fields = {field.name for field in dataclasses.fields(WindowSettings)}
    unknown = set(settings) - window_fields - {
        field.name for field in dataclasses.fields(ServingLimits)}
    if unknown:
        raise TypeError(f"unknown export settings {sorted(unknown)}")
    window_settings = WindowSettings(**{k: v for k, v in settings.items() if k in window_fields})
    limits = ServingLimits(**{k: v for k, v in settings.items() if k not in window_fields})
    if os.path.exists(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} already exists: choose another version, or "
                              f"overwrite it (overwrite=True, --overwrite)")
    if keras.backend.backend() != "tensorflow":
        return in_tensorflow_process(export_saved_model, model, export_dir,
                                     dict(settings, overwrite=overwrite))
    model = load_model(model)
    windows = Windows.for_model(model, window_settings)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(export_dir)}-")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            names_path = os.path.join(tmp, CLASS_NAMES_FILE)
            with open(names_path, "w", encoding="utf-8") as f:
                f.writelines(f"{name}\n" for name in class_names_of(model))
            module = serving_module(model, windows, names_path, limits)
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


def load_model(model):
    """`model`, or the model of a `.keras` path (compile=False)."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: model file not found")
    return keras.saving.load_model(path, compile=False)
