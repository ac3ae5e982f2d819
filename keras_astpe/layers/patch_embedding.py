"""Cuts a log-mel spectrogram into patches and projects each one linearly."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_astpe")
class PatchEmbedding(keras.layers.Layer):
    """Spectrogram patches -> token grid.

    Turns features `[batch, frames, mel_bins]` into a grid of tokens
    `[batch, time_patches, freq_patches, hidden_dim]`. With `patch_stride == patch_size`
    (the paper: 32 frames x 8 mel bins) the patches do not overlap; AST's original 16x16
    patches with stride 10 overlap by 6. The projection is a strided convolution, i.e. the
    same linear map applied to every flattened patch.

    The grid form is kept because the positional encodings need the (time, frequency)
    position of every token; flattening it row by row gives the paper's time-major order
    (token index = t * freq_patches + f). Frames past the last whole patch are dropped
    (a 5 s clip of 498 frames gives 15 patches of 32 frames; its last 18 frames are unused).

    Args:
        hidden_dim: width of each token.
        patch_size: `(frames, mel_bins)` covered by one patch.
        patch_stride: step between patches; defaults to `patch_size` (no overlap).
    """

    def __init__(self, hidden_dim, patch_size=(32, 8), patch_stride=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.patch_size = tuple(int(v) for v in patch_size)
        self.patch_stride = tuple(int(v) for v in (patch_stride or patch_size))
        self.projection = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_stride,
            padding="valid",
            dtype=self.dtype_policy,
            name="projection",
        )

    def num_patches(self, frames, mel_bins):
        """Grid size `(time_patches, freq_patches)` for an input of this size."""
        time = (frames - self.patch_size[0]) // self.patch_stride[0] + 1
        freq = (mel_bins - self.patch_size[1]) // self.patch_stride[1] + 1
        return time, freq

    def build(self, input_shape):
        frames, mel_bins = input_shape[1], input_shape[2]
        if mel_bins is None:
            raise ValueError("PatchEmbedding needs a known number of mel bins.")
        if mel_bins < self.patch_size[1] or (frames is not None and frames < self.patch_size[0]):
            raise ValueError(
                f"Input of {frames} frames x {mel_bins} mel bins is smaller than one patch "
                f"{self.patch_size}."
            )
        self.projection.build((None, frames, mel_bins, 1))

    def call(self, features):
        return self.projection(ops.expand_dims(features, -1))

    def compute_output_shape(self, input_shape):
        frames, mel_bins = input_shape[1], input_shape[2]
        time = None if frames is None else self.num_patches(frames, mel_bins)[0]
        return (input_shape[0], time, self.num_patches(self.patch_size[0], mel_bins)[1],
                self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            patch_size=self.patch_size,
            patch_stride=self.patch_stride,
        )
        return config
