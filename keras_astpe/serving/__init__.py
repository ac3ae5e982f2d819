"""TF Serving export of a classifier that takes audio (see `saved_model`), with its in-graph WAV
decoder (`wav`) and band-limited resampler (`resample`), written in core TensorFlow ops."""

from keras_astpe.serving.resample import SUPPORTED_RATES
from keras_astpe.serving.saved_model import ServingLimits, export_saved_model

__all__ = ["SUPPORTED_RATES", "ServingLimits", "export_saved_model"]
