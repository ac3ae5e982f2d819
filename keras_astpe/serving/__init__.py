"""Exports of a classifier that takes audio (`export`): the TF Serving SavedModel
(`saved_model`, with its in-graph WAV decoder `wav` and band-limited resampler `resample`,
in core TensorFlow ops), and ONNX and LiteRT models (`portable`)."""

from keras_astpe.serving.export import FORMATS, export
from keras_astpe.serving.portable import export_litert, export_onnx
from keras_astpe.serving.resample import SUPPORTED_RATES
from keras_astpe.serving.saved_model import ServingLimits, export_saved_model

__all__ = ["FORMATS", "SUPPORTED_RATES", "ServingLimits", "export", "export_litert",
           "export_onnx", "export_saved_model"]
