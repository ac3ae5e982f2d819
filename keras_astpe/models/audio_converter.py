"""The front end that travels with a model: waveform -> the features the model was trained on.

A classifier saved by the recipes carries an audio converter (the keras-hub pattern of a
preprocessor saved with its task): the front-end settings and the normalization statistics
are part of the model's config, so `keras.saving.load_model` gives everything needed to
score raw audio, and the TF Serving export computes the features inside its graph.

Two front ends: `LogMelAudioConverter`, the paper's (it runs
`keras_astpe.frontend.waveform_to_features`, the very function of the tf.data training
pipeline, so training, prediction and serving cannot disagree), and
`KaldiFbankAudioConverter`, the original AST's (`keras_astpe.kaldi_fbank`). Both are
Keras preprocessing layers written in Keras backend ops (`keras_astpe.framework_ops`): on a
TensorFlow tensor (tf.data on any backend, the exports) they compute with TensorFlow's ops,
inside a model with the model's backend, on its device, with no TensorFlow installed.
"""

import keras

from keras_astpe import kaldi_fbank
from keras_astpe.framework_ops import is_tensorflow, ops_for
from keras_astpe.frontend import DFTS, FrontEndConfig, pad_end, waveform_to_features
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.normalization import NormalizationStats


class AudioConverter(keras.layers.Layer):
    """Mono waveform `[batch, samples]` -> features `[batch, frames, mel_bins]`.

    What every front end offers the code that uses one generically (inference, serving,
    the input pipeline): `sample_rate`, `num_mel_bins`, `num_frames(num_samples)`,
    `num_samples(num_frames)`, `spec_augment_bins` (the bins SpecAugment's frequency masks
    are drawn over) and `features(waveform, masks=None)`. The input is float32 in [-1, 1]
    (or int16 PCM) at `sample_rate`. Like Keras' audio preprocessing layers, the layer runs
    in tf.data (`dataset.map(converter)`) whatever the backend, and in a model on any
    backend and device.

    `dft`: how the spectra are computed, `"fft"` or `"matmul"` (for the ONNX export; see
    `keras_astpe.frontend.real_dft`); `with_dft` gives the converter with another.
    """

    def __init__(self, dft="fft", **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if dft not in DFTS:
            raise ValueError(f"dft must be one of {DFTS}, got {dft!r}")
        self.dft = dft
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    def __call__(self, waveform, *args, **kwargs):
        if is_tensorflow(waveform) and keras.backend.backend() != "tensorflow":
            return self.features(waveform, *args, **kwargs)  # tf.data beside JAX or PyTorch
        return super().__call__(waveform, *args, **kwargs)

    @property
    def sample_rate(self):
        raise NotImplementedError

    @property
    def num_mel_bins(self):
        raise NotImplementedError

    @property
    def spec_augment_bins(self):
        """Length of the `keep_freq` mask `features` takes."""
        raise NotImplementedError

    def num_frames(self, num_samples):
        """Feature frames of a waveform of `num_samples` samples."""
        raise NotImplementedError

    def num_samples(self, num_frames):
        """Fewest samples that give `num_frames` frames of the clip itself."""
        raise NotImplementedError

    def features(self, waveform, masks=None):
        """The features, computed with the ops of the waveform's framework: TensorFlow's
        for a TensorFlow tensor, the Keras backend's otherwise.

        `masks`: SpecAugment keep-masks `(keep_time [..., frames], keep_freq [...,
        spec_augment_bins])` of float 0/1 (training only), applied where the front end's
        original code applies them.
        """
        raise NotImplementedError

    def call(self, waveform, masks=None):
        return self.features(waveform, masks=masks)

    def with_dft(self, dft):
        """This converter computing its spectra with `dft` (`"fft"` or `"matmul"`)."""
        return type(self).from_config({**self.get_config(), "dft": dft})

    def get_config(self):
        config = super().get_config()
        config.update(dft=self.dft)
        return config

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else self.num_frames(samples)
        return (*input_shape[:-1], frames, self.num_mel_bins)


PATCH_LAYOUTS = ("plain", "8x32")


def pad_to(waveform, min_samples):
    """`[..., samples]` with zeros appended to at least `min_samples` samples."""
    ops = ops_for(waveform)
    waveform = ops.convert_to_tensor(waveform)
    return pad_end(waveform, min_samples - ops.shape(waveform)[-1], axis=-1)


def regroup_8x32(features):
    """`[..., frames, bins]` -> the same values regrouped so that each 32 x 8 patch holds an
    8-frame x 32-bin block, flattened frame by frame, in the order of the blocks.

    The blocks are taken time-major (block (c, r): frames 8c.., bins 32r..), as the paper's
    code cut its patches before 2021-09-07 (its `GetPatches` read `patch_size=[32, 8]` as
    32 bins x 8 frames); token k of the 32 x 8 grid is block k, so position layers that lay
    that sequence out as frames / 32 x bins / 8 (its PEGs' `shape_2d`) see what they saw.
    Frames past the last whole 32 are kept as they are (no patch takes them).
    """
    ops = ops_for(features)
    features = ops.convert_to_tensor(features)
    xp = ops.numpy
    *batch, frames, bins = ops.shape(features)
    chunks = frames // 32
    head, tail = features[..., :chunks * 32, :], features[..., chunks * 32:, :]
    blocks = xp.reshape(head, (-1, chunks, 4, 8, bins // 32, 32))  # chunk, c, frame, r, bin
    blocks = xp.transpose(blocks, (0, 1, 2, 4, 3, 5))
    patches = xp.reshape(blocks, (-1, chunks, bins // 8, 32, 8))  # chunk, patch, frame, bin
    patches = xp.transpose(patches, (0, 1, 3, 2, 4))
    regrouped = xp.reshape(patches, (*batch, chunks * 32, bins))
    return xp.concatenate([regrouped, tail], axis=-2)


@keras.saving.register_keras_serializable(package="keras_astpe")
class LogMelAudioConverter(AudioConverter):
    """The paper's front end: waveform -> scaled log-mel features.

    STFT, mel filterbank, log, then the linear map of the training set's statistics to
    [0, 1] (and ReLU, unless `stats.relu` is False), as in the paper's code (SPEC section
    1), without SpecAugment unless `features` is given masks (on the linear magnitude, as
    the paper's code).

    Args:
        frontend: a `FrontEndConfig` (or its dict).
        stats: the `NormalizationStats` of the training set (or their dict: `low`, `high`,
            `num_clips`, `relu`).
        min_samples: zero-pad shorter waveforms at the end to this many samples, as the
            paper's evaluation did to its 158,960-sample input (converted models); None
            scores a clip at its own length.
        patch_layout: `"plain"` (the features as computed) or `"8x32"` (regrouped by
            `regroup_8x32`, for models of the paper's code cut into 8 x 32 patches; needs
            a multiple of 32 mel bins).
    """

    def __init__(self, frontend=None, stats=None, min_samples=None, patch_layout="plain",
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(frontend, dict):
            frontend = FrontEndConfig.from_dict(frontend)
        self.frontend = frontend or FrontEndConfig()
        if isinstance(stats, dict):
            stats = NormalizationStats(low=float(stats["low"]), high=float(stats["high"]),
                                       num_clips=int(stats.get("num_clips", 0)),
                                       relu=bool(stats.get("relu", True)),
                                       frontend=self.frontend)
        self.stats = stats or NormalizationStats(frontend=self.frontend)
        if self.stats.frontend is not None and self.stats.frontend != self.frontend:
            raise ValueError(f"The normalization statistics were computed for the front end "
                             f"{self.stats.frontend}, not {self.frontend}.")
        if min_samples is not None and (isinstance(min_samples, bool) or int(min_samples) < 1):
            raise ValueError(f"min_samples must be a positive number of samples or None, got "
                             f"{min_samples!r}")
        self.min_samples = None if min_samples is None else int(min_samples)
        if patch_layout not in PATCH_LAYOUTS:
            raise ValueError(f"Unknown patch_layout {patch_layout!r}; expected one of "
                             f"{PATCH_LAYOUTS}.")
        if patch_layout == "8x32" and self.frontend.num_mel_bins % 32:
            raise ValueError(f"patch_layout='8x32' needs a multiple of 32 mel bins, got "
                             f"{self.frontend.num_mel_bins}")
        self.patch_layout = patch_layout

    @property
    def sample_rate(self):
        return self.frontend.sample_rate

    @property
    def num_mel_bins(self):
        return self.frontend.num_mel_bins

    @property
    def spec_augment_bins(self):
        return self.frontend.num_spectrogram_bins

    def num_frames(self, num_samples):
        return self.frontend.num_frames(max(num_samples, self.min_samples or 0))

    def num_samples(self, num_frames):
        return self.frontend.num_samples(num_frames)

    def features(self, waveform, masks=None):
        if self.min_samples is not None:
            waveform = pad_to(waveform, self.min_samples)
        features = waveform_to_features(waveform, self.frontend, self.stats, masks=masks,
                                        dft=self.dft)
        return regroup_8x32(features) if self.patch_layout == "8x32" else features

    def get_config(self):
        config = super().get_config()
        config.update(frontend=self.frontend.to_dict(),
                      stats={"low": self.stats.low, "high": self.stats.high,
                             "num_clips": self.stats.num_clips, "relu": self.stats.relu},
                      min_samples=self.min_samples, patch_layout=self.patch_layout)
        return config


@keras.saving.register_keras_serializable(package="keras_astpe")
class KaldiFbankAudioConverter(AudioConverter):
    """The original AST's front end: waveform -> normalized kaldi log-mel fbank.

    `torchaudio.compliance.kaldi.fbank` as AST calls it (128 bins, 25 ms Hann frames every
    10 ms, DC removal, pre-emphasis), zero frames appended or frames cut to
    `config.target_frames` (1024 for AudioSet; None keeps the clip's frames), then
    (x - mean) / (2 std) with the dataset's statistics (AudioSet's by default); see
    `keras_astpe.kaldi_fbank`. SpecAugment masks, when `features` is given them, zero
    fbank values after the padding and before the normalization, as AST's dataloader
    does.

    Args:
        config: a `KaldiFbankConfig` (or its dict); AST's AudioSet settings by default.
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = KaldiFbankConfig.from_dict(config)
        self.config = config or KaldiFbankConfig()

    @property
    def sample_rate(self):
        return self.config.sample_rate

    @property
    def num_mel_bins(self):
        return self.config.num_mel_bins

    @property
    def spec_augment_bins(self):
        return self.config.num_mel_bins

    def num_frames(self, num_samples):
        if self.config.target_frames is not None:
            return self.config.target_frames
        return self.config.num_frames(num_samples)

    def num_samples(self, num_frames):
        return self.config.num_samples(num_frames)

    def features(self, waveform, masks=None):
        return kaldi_fbank.waveform_to_fbank(waveform, self.config, masks=masks, dft=self.dft)

    def get_config(self):
        config = super().get_config()
        config.update(config=self.config.to_dict())
        return config
