"""ONNX and LiteRT exports: one file that takes the waveform and returns the scores, with the
front end inside, for ONNX Runtime (servers, browsers, C++/C#/Java) and LiteRT (phones,
microcontrollers).

Input `waveform`: float32 `[batch, samples]`, mono at the converter's rate (16 kHz) in
[-1, 1], the clips of a call of one length, any length from one patch (0.335 s for the
paper's front end), or exactly `seconds` when the export fixes it. Outputs: `scores`
`[batch, num_classes]` (the model's sigmoid or softmax) and `embedding`
`[batch, hidden_dim]` (what the head reads). Each clip is scored whole, as
`tag(..., whole_clips=True)` scores it: cut a recording longer than the model's training
clips into windows of that length and average their scores, as `tag` and the TF Serving
export do in their graph. The class names travel with the file: in the ONNX model's
metadata (`class_names`, a JSON list, and `sample_rate`), in `<file>.class_names.txt` (one
per line, in output order) beside a `.tflite`.

Both come from a TensorFlow graph of the model (under the TensorFlow backend; from JAX or
PyTorch in a child process, as the SavedModel): ONNX through tf2onnx, whose FFT conversion
cannot give the real and imaginary parts, so the front end computes its DFT as a matrix
product there (`dft="matmul"`: the same values to float32 rounding); LiteRT through a
SavedModel and the TFLite converter, with LiteRT's built-in operators only (the
interpreter of `ai-edge-litert` has no TensorFlow operators).
"""

import functools
import json
import os
import tempfile

import keras

from keras_astpe._startup import tf
from keras_astpe.inference import audio_converter_of, class_names_of
from keras_astpe.io_utils import atomic_path, atomic_write_text
from keras_astpe.serving.saved_model import load_model, score_clips
from keras_astpe.serving.tensorflow_process import in_tensorflow_process

ONNX_OPSET = 17


def clip_function(model, converter, num_samples=None):
    """`tf.function`: `waveform [batch, samples]` -> `{"scores", "embedding"}` of each clip
    whole, its features computed by `converter` (samples fixed to `num_samples` if given)."""
    spec = tf.TensorSpec([None, num_samples], tf.float32, name="waveform")
    return tf.function(functools.partial(score_clips, model, converter),
                       input_signature=[spec], autograph=False)


def _prepared(model, path, suffix, seconds, overwrite):
    """The loaded model and its fixed number of samples (None: any), after the checks."""
    path = os.fspath(path)
    if not path.endswith(suffix):
        raise ValueError(f"{path}: the file name must end with {suffix}")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another name, or overwrite it "
                              f"(overwrite=True, --overwrite)")
    model = load_model(model)
    converter = audio_converter_of(model)
    if seconds is None:
        return model, None
    num_samples = round(float(seconds) * converter.sample_rate)
    shortest = converter.num_samples(model.backbone.patch_size[0])
    if num_samples < shortest:
        raise ValueError(f"seconds={seconds} is shorter than one patch of the model: at "
                         f"least {shortest / converter.sample_rate:.3f} s")
    return model, num_samples


def export_onnx(model, path, *, seconds=None, overwrite=False):
    """Writes the ONNX model of a classifier (a model or its `.keras` path) to `path`
    (`.onnx`); returns `path`. `seconds`: a fixed clip length (default: any)."""
    if keras.backend.backend() != "tensorflow":
        return in_tensorflow_process(export_onnx, model, path,
                                     {"seconds": seconds, "overwrite": overwrite})
    import onnx
    import tf2onnx

    model, num_samples = _prepared(model, path, ".onnx", seconds, overwrite)
    converter = audio_converter_of(model)
    function = clip_function(model, converter.with_dft("matmul"), num_samples)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                             opset=ONNX_OPSET)
    onnx.helper.set_model_props(proto, {
        "class_names": json.dumps(list(class_names_of(model))),
        "sample_rate": str(converter.sample_rate)})
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
    return os.fspath(path)


def export_litert(model, path, *, seconds=None, overwrite=False):
    """Writes the LiteRT (`.tflite`) model of a classifier (a model or its `.keras` path) to
    `path`, and its class names beside it; returns `path`. `seconds`: a fixed clip length
    (default: any)."""
    if keras.backend.backend() != "tensorflow":
        return in_tensorflow_process(export_litert, model, path,
                                     {"seconds": seconds, "overwrite": overwrite})
    model, num_samples = _prepared(model, path, ".tflite", seconds, overwrite)
    function = clip_function(model, audio_converter_of(model), num_samples)
    module = tf.Module()
    module.model_variables = list(function.get_concrete_function().variables)
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved,
                            signatures={"serving_default": function.get_concrete_function()})
        lite = tf.lite.TFLiteConverter.from_saved_model(saved)
        lite.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = lite.convert()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(flatbuffer)
    atomic_write_text(class_names_path(path),
                      "".join(f"{name}\n" for name in class_names_of(model)))
    return os.fspath(path)


def class_names_path(tflite_path):
    """`model.tflite` -> `model.tflite.class_names.txt`."""
    return os.fspath(tflite_path) + ".class_names.txt"
