"""`export(model, path, format=...)`: a classifier as a TF Serving SavedModel, an ONNX model or a
LiteRT model, each taking the waveform, with the front end inside (see `saved_model` and
`portable`)."""

from keras_astpe.serving.portable import export_litert, export_onnx
from keras_astpe.serving.saved_model import export_saved_model

EXPORTERS = {"tf_saved_model": export_saved_model, "onnx": export_onnx,
             "litert": export_litert}
FORMATS = tuple(EXPORTERS)


def export(model, path, format="tf_saved_model", **settings):
    """Writes `model` (a classifier that carries its audio converter, or its `.keras` path)
    to `path` in `format`; returns `path`.

    - `"tf_saved_model"`: the version folder `<base>/<name>/<version>` of TF Serving, with
      the signatures `serving_default` (waveforms) and `serving_wav` (WAV files); settings:
      windows and limits (see `export_saved_model`), `overwrite`.
    - `"onnx"` (`path` ends with `.onnx`) and `"litert"` (`.tflite`): waveforms in, scores
      and embedding out, each clip scored whole; settings: `seconds` (a fixed clip length;
      default any), `overwrite`.

    Runs from any backend (the export itself under TensorFlow; see `tensorflow_process`).
    """
    if format not in EXPORTERS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return EXPORTERS[format](model, path, **settings)
