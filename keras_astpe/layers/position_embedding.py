"""Learned absolute position embeddings over the (time, frequency) patch grid."""

import keras
from keras import ops


def _resize_axis(table, new_size, axis):
    """Linear interpolation of `table` along `axis` to `new_size` entries.

    Uses half-pixel centres (as `tf.image.resize(..., "bilinear")` and
    `torch.nn.functional.interpolate(..., align_corners=False)`), so a table resized to
    its own size is returned unchanged and resizing along both grid axes is bilinear.
    """
    old_size = ops.shape(table)[axis]
    scale = ops.cast(old_size, "float32") / ops.cast(new_size, "float32")
    source = (ops.arange(new_size, dtype="float32") + 0.5) * scale - 0.5
    source = ops.clip(source, 0.0, ops.cast(old_size - 1, "float32"))
    lower = ops.floor(source)
    weight = ops.cast(source - lower, table.dtype)
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, old_size - 1)
    shape = [1] * len(table.shape)
    shape[axis] = -1
    weight = ops.reshape(weight, shape)
    return (ops.take(table, lower, axis=axis) * (1.0 - weight)
            + ops.take(table, upper, axis=axis) * weight)


@keras.saving.register_keras_serializable(package="keras_astpe")
class AbsolutePositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding per patch position to a token grid `[batch, T, F, dim]`.

    `absolute` PE (AST, ViT): one vector per grid cell, `grid_shape = (T, F)` of the
    training input (paper: 31 x 8 x 768 = 190,464 parameters). With
    `frequency_only=True` (`time_alibi`), one vector per frequency band, shared by all
    time chunks (8 x 768): time information then comes from ALiBi.

    A grid of another size (a 5 s or 30 s clip on a model trained on 10 s) gets the table
    resized by bilinear interpolation, as AST does when it adapts ImageNet embeddings.

    Args:
        grid_shape: `(time_patches, freq_patches)` the table is learned for.
        frequency_only: learn one embedding per frequency band instead of per cell.
        initializer: initializer of the table.
    """

    def __init__(self, grid_shape, frequency_only=False, initializer="truncated_normal",
                 **kwargs):
        super().__init__(**kwargs)
        self.grid_shape = tuple(int(v) for v in grid_shape)
        self.frequency_only = bool(frequency_only)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        shape = self.grid_shape[1:] if self.frequency_only else self.grid_shape
        self.embeddings = self.add_weight(
            shape=(*shape, input_shape[-1]), initializer=self.initializer, name="embeddings"
        )

    def call(self, grid):
        embeddings = ops.cast(self.embeddings, grid.dtype)
        time, freq = ops.shape(grid)[1], ops.shape(grid)[2]
        if self.frequency_only:
            return grid + _resize_axis(embeddings, freq, axis=0)[None, None]
        embeddings = _resize_axis(_resize_axis(embeddings, time, axis=0), freq, axis=1)
        return grid + embeddings[None]

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_shape=self.grid_shape,
            frequency_only=self.frequency_only,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config
