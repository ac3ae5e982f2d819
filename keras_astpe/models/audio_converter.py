"""The front end that travels with a model: waveform -> the features the model was trained on.

A classifier saved by the recipes carries an audio converter (the keras-hub pattern of a
preprocessor saved with its task): the front-end settings and the normalization statistics
are part of the model's config, so `keras.saving.load_model` gives everything needed to
score raw audio, and the TF Serving export computes the features inside its graph.

The converter runs `keras_astpe.frontend.waveform_to_features`, the very function of the
tf.data training pipeline, so training, prediction and serving cannot disagree. It is
written in TensorFlow ops (`tf.signal`); on the JAX and PyTorch backends it runs them
eagerly on the host and hands the features over as a backend tensor.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_astpe.frontend import FrontEndConfig, waveform_to_features
from keras_astpe.normalization import NormalizationStats


@keras.saving.register_keras_serializable(package="keras_astpe")
class LogMelAudioConverter(keras.layers.Layer):
    """Mono waveform `[batch, samples]` -> scaled log-mel features `[batch, frames, bins]`.

    The paper's front end (SPEC section 1): STFT, mel filterbank, log, then the linear map
    of the training set's statistics to [0, 1] (and ReLU), without SpecAugment. The input is
    float32 in [-1, 1] (or int16 PCM) at `frontend.sample_rate`.

    Args:
        frontend: a `FrontEndConfig` (or its dict).
        stats: the `NormalizationStats` of the training set (or their dict: `low`, `high`,
            `num_clips`).
    """

    def __init__(self, frontend=None, stats=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if isinstance(frontend, dict):
            frontend = FrontEndConfig.from_dict(frontend)
        self.frontend = frontend or FrontEndConfig()
        if isinstance(stats, dict):
            stats = NormalizationStats(low=float(stats["low"]), high=float(stats["high"]),
                                       num_clips=int(stats.get("num_clips", 0)),
                                       frontend=self.frontend)
        self.stats = stats or NormalizationStats(frontend=self.frontend)
        if self.stats.frontend is not None and self.stats.frontend != self.frontend:
            raise ValueError(f"The normalization statistics were computed for the front end "
                             f"{self.stats.frontend}, not {self.frontend}.")
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    @property
    def sample_rate(self):
        return self.frontend.sample_rate

    @property
    def num_mel_bins(self):
        return self.frontend.num_mel_bins

    def num_frames(self, num_samples):
        """Feature frames of a waveform of `num_samples` samples."""
        return self.frontend.num_frames(num_samples)

    def num_samples(self, num_frames):
        """Fewest samples that give `num_frames` frames."""
        return self.frontend.num_samples(num_frames)

    def features(self, waveform):
        """The features as a TensorFlow tensor, on any backend (tf.data, serving)."""
        return waveform_to_features(waveform, self.frontend, self.stats)

    def call(self, waveform):
        if keras.backend.backend() == "tensorflow":
            return self.features(waveform)
        waveform = keras.ops.convert_to_numpy(waveform)
        return keras.ops.convert_to_tensor(np.asarray(self.features(tf.constant(waveform))))

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else self.num_frames(samples)
        return (*input_shape[:-1], frames, self.num_mel_bins)

    def get_config(self):
        config = super().get_config()
        config.update(frontend=self.frontend.to_dict(),
                      stats={"low": self.stats.low, "high": self.stats.high,
                             "num_clips": self.stats.num_clips})
        return config
