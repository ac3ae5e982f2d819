"""Learned 2D relative attention: Music Transformer relative logits over time and frequency."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_astpe")
class LearnedRelativeBias(keras.layers.Layer):
    """R_ij = Q_i . E^t[dt(i, j)] + Q_i . E^f[df(i, j)] for a [CLS] + time-major patch sequence.

    E^t has one row per time distance (2T - 1 rows for a grid of T time chunks) and E^f
    one per frequency distance (2F - 1), each of size head_dim, shared by the heads of
    the layer (paper: 12 x (61 + 15) x 64 = 58,368 parameters over 12 blocks). [CLS] is
    at distance 0 from every token. Distances beyond the trained grid (longer clips) use
    the row of the largest trained distance.

    Nothing larger than the `[batch, heads, L, L]` logits is built: the query of patch
    (t, f) only meets T rows of E^t and F rows of E^f, so the two terms are computed on
    the small `[.., T, F, T]` and `[.., T, F, F]` tensors and broadcast-added into R.

    Called on the queries `[batch, length, heads, head_dim]`, returns R as
    `[batch, heads, length, length]` in float32.

    Args:
        grid_shape: `(time_patches, freq_patches)` of the training input; sizes the tables.
        initializer: initializer of E^t and E^f.
    """

    def __init__(self, grid_shape, initializer="truncated_normal", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.grid_shape = tuple(int(v) for v in grid_shape)
        self.initializer = keras.initializers.get(initializer)

    def build(self, query_shape):
        head_dim = query_shape[-1]
        time, freq = self.grid_shape
        self.time_embeddings = self.add_weight(
            shape=(2 * time - 1, head_dim), initializer=self.initializer, name="time_embeddings"
        )
        self.freq_embeddings = self.add_weight(
            shape=(2 * freq - 1, head_dim), initializer=self.initializer, name="freq_embeddings"
        )

    def _relative_rows(self, table, size, max_size):
        """`[size, size, head_dim]`: the row of `table` for each (query, key) distance."""
        position = ops.arange(size, dtype="int32")
        distance = ops.clip(position[:, None] - position[None, :], 1 - max_size, max_size - 1)
        return ops.take(table, distance + max_size - 1, axis=0)

    def call(self, query):
        batch, length, heads, head_dim = (ops.shape(query)[i] for i in range(4))
        freq = self.grid_shape[1]
        patches = ops.reshape(query[:, 1:], (batch, -1, freq, heads, head_dim))
        time = ops.shape(patches)[1]

        time_rows = self._relative_rows(self.time_embeddings, time, self.grid_shape[0])
        freq_rows = self._relative_rows(self.freq_embeddings, freq, freq)
        time_logits = ops.einsum("btfhd,tsd->bhtfs", patches, time_rows)
        freq_logits = ops.einsum("btfhd,fgd->bhtfg", patches, freq_rows)
        patch_bias = time_logits[..., :, None] + freq_logits[..., None, :]
        patch_bias = ops.reshape(patch_bias, (batch, heads, length - 1, length - 1))

        same_position = (self.time_embeddings[self.grid_shape[0] - 1]
                         + self.freq_embeddings[freq - 1])
        to_cls = ops.einsum("blhd,d->bhl", query, same_position)
        cls_row = ops.broadcast_to(to_cls[:, :, :1, None], (batch, heads, 1, length - 1))
        bias = ops.concatenate([cls_row, patch_bias], axis=2)
        return ops.concatenate([to_cls[..., None], bias], axis=3)

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_shape=self.grid_shape,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config
