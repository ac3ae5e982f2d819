"""Positional encoding generator (PEG) of conditional position encodings (CPVT)."""

import keras
from keras import ops

from keras_astpe.layers.class_token import split_prefix_tokens


@keras.saving.register_keras_serializable(package="keras_astpe")
class PositionEncodingGenerator(keras.layers.Layer):
    """Conditional positional encoding: `x + DepthwiseConv3x3(grid(x))`.

    The patch tokens of a sequence `[batch, 1 + T * F, dim]` ([CLS] first, patches in
    time-major order) are laid out as the `T x F` grid, a depthwise convolution with
    "same" padding turns each token's neighbourhood into a positional embedding, and the
    embedding is added back. Zero padding at the borders is what lets the convolution
    tell where a token is. The [CLS] token passes through unchanged, or gets a learned
    embedding added with `cls_embedding=True`; other prefix tokens (AST's distillation
    token, `num_prefix_tokens=2`) pass through unchanged.

    Paper configuration: 3x3 kernel, a PEG after each of the first 5 blocks,
    5 x (9 x 768 + 768) = 38,400 parameters.

    Args:
        freq_patches: number of frequency bands F of the grid.
        kernel_size: size of the square depthwise kernel.
        cls_embedding: learn an embedding added to the [CLS] token.
        num_prefix_tokens: tokens before the patches, [CLS] first.
    """

    def __init__(self, freq_patches, kernel_size=3, cls_embedding=False, num_prefix_tokens=1,
                 **kwargs):
        super().__init__(**kwargs)
        self.freq_patches = int(freq_patches)
        self.kernel_size = int(kernel_size)
        self.cls_embedding = bool(cls_embedding)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.conv = keras.layers.DepthwiseConv2D(
            kernel_size=self.kernel_size, padding="same", dtype=self.dtype_policy, name="conv"
        )

    def build(self, input_shape):
        dim = input_shape[-1]
        self.conv.build((None, None, self.freq_patches, dim))
        if self.cls_embedding:
            self.cls_position = self.add_weight(
                shape=(dim,), initializer="zeros", name="cls_position"
            )

    def call(self, sequence):
        batch, dim = ops.shape(sequence)[0], ops.shape(sequence)[-1]
        prefix, patches = split_prefix_tokens(sequence, self.num_prefix_tokens)
        grid = ops.reshape(patches, (batch, -1, self.freq_patches, dim))
        patches = patches + ops.reshape(self._depthwise(grid), ops.shape(patches))
        if self.cls_embedding:
            first = ops.cast(ops.arange(self.num_prefix_tokens) == 0, prefix.dtype)
            prefix = prefix + first[:, None] * ops.cast(self.cls_position, prefix.dtype)
        return ops.concatenate([prefix, patches], axis=1)

    def _depthwise(self, grid):
        """`self.conv(grid)`; on JAX, as the sum of the grid's shifts times the kernel's taps.

        XLA:CPU's grouped convolution takes 14x as long as the shifted sums, forward and
        backward (16 against 1.1 ms on `ast-pe-small`'s grid; bench/README.md).
        """
        if keras.backend.backend() != "jax":
            return self.conv(grid)
        size = self.kernel_size
        before, after = (size - 1) // 2, size // 2  # "same" padding, as Keras pads
        frames, bands = grid.shape[1], grid.shape[2]
        padded = ops.pad(grid, ((0, 0), (before, after), (before, after), (0, 0)))
        kernel = ops.cast(self.conv.kernel, grid.dtype)  # [size, size, dim, 1]
        output = sum(padded[:, i:i + frames, j:j + bands, :] * kernel[i, j, :, 0]
                     for i in range(size) for j in range(size))
        if self.conv.use_bias:
            output = output + ops.cast(self.conv.bias, grid.dtype)
        return output

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            freq_patches=self.freq_patches,
            kernel_size=self.kernel_size,
            cls_embedding=self.cls_embedding,
            num_prefix_tokens=self.num_prefix_tokens,
        )
        return config
