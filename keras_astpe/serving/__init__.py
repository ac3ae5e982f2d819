"""TF Serving export of a classifier that takes audio (see `export`), with its in-graph WAV
decoder (`wav`) and band-limited resampler (`resample`), written in core TensorFlow ops."""

from keras_astpe.serving.export import export_saved_model
from keras_astpe.serving.resample import SUPPORTED_RATES

__all__ = ["SUPPORTED_RATES", "export_saved_model"]
