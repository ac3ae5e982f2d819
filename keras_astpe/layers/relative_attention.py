"""Learned 2D relative attention: Music Transformer relative logits over time and frequency."""

import keras
from keras import ops

from keras_astpe.layers.class_token import split_prefix_tokens


@keras.saving.register_keras_serializable(package="keras_astpe")
class LearnedRelativeBias(keras.layers.Layer):
    """R_ij = Q_i . E^t[dt(i, j)] + Q_i . E^f[df(i, j)] for a [CLS] + time-major patch sequence.

    E^t has one row per time distance (2T - 1 rows for a grid of T time chunks) and E^f
    one per frequency distance (2F - 1), each of size head_dim, shared by the heads of
    the layer (paper: 12 x (61 + 15) x 64 = 58,368 parameters over 12 blocks). As in the
    original code, the rows are indexed by key minus query: for query i and key j, row
    (t_j - t_i) + T - 1 of E^t and (f_j - f_i) + F - 1 of E^f, so row 0 is the key
    T - 1 chunks before the query. [CLS] (and any other prefix token, such as AST's
    distillation token) is at distance 0 from every token. Distances beyond the trained
    grid (longer clips) use the row of the largest trained distance.

    Nothing larger than the `[batch, heads, L, L]` logits is built: the query of patch
    (t, f) only meets T rows of E^t and F rows of E^f, so the two terms are computed on
    the small `[.., L, T]` and `[.., L, F]` tensors (one matrix product each, plus the
    Music Transformer's skewing) and broadcast-added into R.

    Called on the queries `[batch, length, heads, head_dim]`, returns `scale` R as
    `[batch, heads, length, length]` in float32.

    Args:
        grid_shape: `(time_patches, freq_patches)` of the training input; sizes the tables.
        initializer: initializer of E^t and E^f.
        num_prefix_tokens: tokens before the patches ([CLS], and a distillation token).
    """

    def __init__(self, grid_shape, initializer="truncated_normal", num_prefix_tokens=1,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.grid_shape = tuple(int(v) for v in grid_shape)
        self.initializer = keras.initializers.get(initializer)
        self.num_prefix_tokens = int(num_prefix_tokens)

    def build(self, query_shape):
        head_dim = query_shape[-1]
        time, freq = self.grid_shape
        self.time_embeddings = self.add_weight(
            shape=(2 * time - 1, head_dim), initializer=self.initializer, name="time_embeddings"
        )
        self.freq_embeddings = self.add_weight(
            shape=(2 * freq - 1, head_dim), initializer=self.initializer, name="freq_embeddings"
        )

    def _relative_logits(self, queries, table, trained_size):
        """Entry (..., i, m, j) = queries[..., i, m, :] . table[row of positions i, j].

        The row is that of the distance j - i.

        `queries` is `[*lead, N, middle, head_dim]`: N positions along the axis, any
        `middle` axes flattened in between, so the queries keep their native layout. One
        matrix product against the rows of the distances -(N-1)..N-1 (clipped to the
        trained range), then the "skewing" of the Music Transformer, generalised to the
        middle axis: padding one column, flattening and re-cutting rows one element
        shorter shifts the columns of position i by N-1-i, turning relative columns into
        key columns without a gather. Returns `[*lead, N, middle, N]`.
        """
        size, middle = ops.shape(queries)[-3], ops.shape(queries)[-2]
        lead = ops.shape(queries)[:-3]
        distance = ops.arange(2 * size - 1, dtype="int32") - (size - 1)  # key minus query
        rows = ops.clip(distance, 1 - trained_size, trained_size - 1) + trained_size - 1
        logits = ops.matmul(queries, ops.transpose(ops.take(table, rows, axis=0)))
        # logits[..., i, m, c] is for key j = i + c - (N - 1): shift row i left by N - 1 - i.
        # Slices are `ops.slice`: TensorFlow's gradient of `x[a:b]` is slow on CPU.
        no_pad = [(0, 0)] * (len(logits.shape) - 1)
        row = middle * 2 * size
        flat = ops.reshape(ops.pad(logits, no_pad + [(0, 1)]), (*lead, size * row))
        flat = ops.slice(flat, [0] * len(lead) + [size - 1], (*lead, size * (row - 1)))
        skewed = ops.pad(ops.reshape(flat, (*lead, size, row - 1)), no_pad[:-1] + [(0, 1)])
        skewed = ops.reshape(skewed, (*lead, size, middle, 2 * size))
        return ops.slice(skewed, [0] * (len(lead) + 3), (*lead, size, middle, size))

    def call(self, query, scale=1.0):
        batch, length, heads, head_dim = (ops.shape(query)[i] for i in range(4))
        time_size, freq = self.grid_shape
        prefix = self.num_prefix_tokens
        # R is linear in the tables: scaling them scales R at a fraction of R's size.
        time_table, freq_table = self.time_embeddings * scale, self.freq_embeddings * scale
        _, patches = split_prefix_tokens(query, prefix)
        patches = ops.reshape(patches, (batch, -1, freq, heads, head_dim))
        time = ops.shape(patches)[1]
        num_patches = length - prefix

        # [batch, heads, T * F (queries), T (key times)] and [.., F (key bands)].
        time_logits = self._relative_logits(
            ops.reshape(patches, (batch, time, freq * heads, head_dim)), time_table, time_size,
        )
        time_logits = ops.reshape(
            ops.transpose(ops.reshape(time_logits, (batch, time, freq, heads, time)),
                          (0, 3, 1, 2, 4)),
            (batch, heads, num_patches, time),
        )
        freq_logits = self._relative_logits(patches, freq_table, freq)
        freq_logits = ops.reshape(ops.transpose(freq_logits, (0, 3, 1, 2, 4)),
                                  (batch, heads, num_patches, freq))

        # Prefix tokens are at distance 0 from everything: every query against the rows of
        # distance 0, in one product, `[batch, heads, length, 2]` (time, frequency). Their
        # sum is the prefix keys' column; the first `prefix` queries' terms fill every key
        # time and band of the prefix queries' rows.
        zero_rows = ops.stack([ops.take(time_table, time_size - 1, axis=0),
                               ops.take(freq_table, freq - 1, axis=0)], axis=1)
        zero_terms = ops.transpose(ops.matmul(query, zero_rows), (0, 2, 1, 3))
        prefix_time, prefix_freq = (
            ops.slice(zero_terms, (0, 0, 0, axis), (batch, heads, prefix, 1)) for axis in (0, 1))
        time_logits = ops.concatenate(
            [ops.broadcast_to(prefix_time, (batch, heads, prefix, time)), time_logits], axis=2)
        freq_logits = ops.concatenate(
            [ops.broadcast_to(prefix_freq, (batch, heads, prefix, freq)), freq_logits], axis=2)

        # Patch keys: R[i, (t, f)] = time term of t + frequency term of f.
        to_patches = ops.expand_dims(time_logits, -1) + ops.expand_dims(freq_logits, -2)
        to_patches = ops.reshape(to_patches, (batch, heads, length, num_patches))
        to_prefix = ops.sum(zero_terms, axis=-1, keepdims=True)
        to_prefix = ops.broadcast_to(to_prefix, (batch, heads, length, prefix))
        return ops.concatenate([to_prefix, to_patches], axis=3)

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_shape=self.grid_shape,
            initializer=keras.initializers.serialize(self.initializer),
            num_prefix_tokens=self.num_prefix_tokens,
        )
        return config
