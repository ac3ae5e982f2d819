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
    An input smaller than one patch is an error that says how many frames (mel bins) one
    patch needs, on every backend, eagerly and compiled: checked in Python where the
    shape is known while tracing (eager, `predict`, `jax.jit`, `torch.compile`, XLA), by
    an assertion in the graph where it is not (a TensorFlow graph traced for any number
    of frames). XLA drops graph assertions, so a TensorFlow function compiled with XLA
    for any number of frames is the one case left unchecked (its output then has no
    patch tokens).

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
        self._check_size(frames, mel_bins)
        time = (frames - self.patch_size[0]) // self.patch_stride[0] + 1
        freq = (mel_bins - self.patch_size[1]) // self.patch_stride[1] + 1
        return time, freq

    def _needs(self, axis):
        """What an input needs along frames (axis 0) or mel bins (axis 1), for errors."""
        unit = ("frames", "mel bins")[axis]
        return (f"Too few {unit}: the AST needs at least {self.patch_size[axis]} {unit} (one "
                f"patch of {self.patch_size[0]} frames x {self.patch_size[1]} mel bins), got")

    def _check_size(self, frames, mel_bins):
        """Raises if a size known now (not None) is smaller than one patch."""
        for axis, size in enumerate((frames, mel_bins)):
            if size is not None and size < self.patch_size[axis]:
                raise ValueError(f"{self._needs(axis)} {size}.")

    def build(self, input_shape):
        frames, mel_bins = input_shape[1], input_shape[2]
        if mel_bins is None:
            raise ValueError("PatchEmbedding needs a known number of mel bins.")
        self._check_size(frames, mel_bins)
        self.projection.build((None, frames, mel_bins, 1))

    def call(self, features):
        frames, mel_bins = ops.shape(features)[1], ops.shape(features)[2]
        if keras.backend.backend() == "tensorflow" and not isinstance(frames, int):
            # A graph traced for any number of frames: the check runs with the graph.
            features = _assert_at_least(features, frames, self.patch_size[0], self._needs(0))
        else:
            self._check_size(frames, mel_bins)
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


def _assert_at_least(features, size, minimum, message):
    """`features`, after a run-time check that `size >= minimum` (TensorFlow graphs only).

    The error reads `message` followed by the size received.
    """
    import tensorflow as tf

    check = tf.debugging.Assert(size >= minimum, [message, size])
    with tf.control_dependencies([check]):
        return tf.identity(features)
