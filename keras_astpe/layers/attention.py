"""Multi-head self-attention with a pluggable position bias."""

import keras
from keras import ops


def deserialize_position_bias(position_bias):
    """A position-bias layer, from itself or from its config (as `get_config` stores it)."""
    if isinstance(position_bias, dict):
        return keras.saving.deserialize_keras_object(position_bias)
    return position_bias


def scaled_dot_product_attention(query, key, value, bias, scale):
    """softmax(scale * Q K^T + bias) V over `[batch, length, heads, key_dim]` tensors.

    On PyTorch, `keras.ops.dot_product_attention` (its fused SDPA kernel). Elsewhere the
    heads move in front of the length first, so that both products are batched over the
    two leading axes: `keras.ops.dot_product_attention` contracts the `[batch, length,
    heads, key_dim]` layout as it lies, for which XLA:CPU emits a slow batched product and
    transposes around the softmax (the attention's forward and backward passes take 1.6x
    as long on JAX, see bench/README.md). On JAX the softmax is not normalised before the
    product: its output is divided instead, `[.., L, key_dim]` rather than `[.., L, L]`
    (the step of `ast-pe-small` 3 % shorter; on TensorFlow, whose softmax is one fused
    kernel, 7 % longer).
    """
    if keras.backend.backend() == "torch":
        return ops.dot_product_attention(query, key, value, bias=bias, scale=scale,
                                         flash_attention=False if bias is not None else None)
    query, key, value = (ops.transpose(t, (0, 2, 1, 3)) for t in (query, key, value))
    logits = ops.einsum("bhtd,bhsd->bhts", query * scale, key)
    if bias is not None:
        logits = logits + bias
    if keras.backend.backend() == "jax":
        # The softmax's division applied to the product, L / key_dim times smaller.
        weights = ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))
        attended = ops.einsum("bhts,bhsd->bhtd", weights, value)
        attended = attended / ops.sum(weights, axis=-1, keepdims=True)
    else:
        attended = ops.einsum("bhts,bhsd->bhtd", ops.softmax(logits, axis=-1), value)
    return ops.transpose(attended, (0, 2, 1, 3))


@keras.saving.register_keras_serializable(package="keras_astpe")
class MultiHeadSelfAttention(keras.layers.Layer):
    """softmax((Q K^T + R) / sqrt(d)) V, with R from an optional position-bias layer.

    As in the original code, the position bias R is added to the logits *before* the
    1/sqrt(head_dim) scaling, so it is handed to `scaled_dot_product_attention` as
    R / sqrt(head_dim). The position-bias layer (`ALiBiBias`, `LearnedRelativeBias`) is
    called on the queries and that scale, and returns R times the scale (each layer
    scales where it is cheapest, not the `[batch, heads, L, L]` result). Attention runs
    in float32 whatever the dtype policy, so the softmax of mixed-precision models stays
    in float32; projections use the layer's compute dtype. With a bias, PyTorch's flash
    attention is disabled explicitly (a flash kernel may drop the bias).

    The projections run on the `[batch * length, dim]` token matrix, so each is one 2D
    matrix product. On XLA:CPU (JAX) this halves the training step of the paper preset:
    the weight gradient of a product over `[batch, length, dim]` contracts two axes, which
    XLA computes by first transposing the output gradient, and the gradient of the
    residual stream is not materialized but recomputed, from every later block's
    contributions, inside each such transpose (strided reads of ~170 arrays per block).
    A 2D product's weight gradient reads the gradient as it lies.

    Args:
        num_heads: number of attention heads.
        key_dim: size of each head.
        use_bias: biases in the query/key/value/output projections (the paper: none).
        position_bias: a layer mapping queries `[batch, L, heads, key_dim]` and a `scale`
            to `scale` R, or None.
    """

    def __init__(self, num_heads, key_dim, use_bias=False, position_bias=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.use_bias = bool(use_bias)
        self.position_bias = deserialize_position_bias(position_bias)

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        heads_shape = (input_shape[0], input_shape[1], self.num_heads, self.key_dim)
        # On token matrices: [tokens, dim] -> [tokens, heads, key_dim] -> [tokens, dim].
        self.query_dense, self.key_dense, self.value_dense = (
            keras.layers.EinsumDense(
                "ab,bcd->acd",
                output_shape=(self.num_heads, self.key_dim),
                bias_axes="cd" if self.use_bias else None,
                dtype=self.dtype_policy,
                name=name,
            )
            for name in ("query", "key", "value")
        )
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build((None, hidden_dim))
        self.output_dense = keras.layers.EinsumDense(
            "abc,bcd->ad",
            output_shape=(hidden_dim,),
            bias_axes="d" if self.use_bias else None,
            dtype=self.dtype_policy,
            name="attention_output",
        )
        self.output_dense.build((None, self.num_heads, self.key_dim))
        if self.position_bias is not None and not self.position_bias.built:
            self.position_bias.build(heads_shape)

    def call(self, x, num_query_tokens=None):
        """`x` `[batch, L, dim]` -> `[batch, L, dim]`, or with `num_query_tokens=n` the
        outputs of the first `n` tokens alone `[batch, n, dim]` (every token still a key
        and a value): what a head that reads the prefix tokens needs of the last block."""
        batch, length, hidden_dim = ops.shape(x)
        queries = length if num_query_tokens is None else num_query_tokens

        def heads(dense, x, length):
            tokens = ops.reshape(x, (-1, hidden_dim))
            return ops.cast(ops.reshape(dense(tokens), (batch, length, self.num_heads,
                                                        self.key_dim)), "float32")

        key, value = (heads(dense, x, length) for dense in (self.key_dense, self.value_dense))
        scale = 1.0 / self.key_dim**0.5
        bias = None
        if self.position_bias is None:
            query = heads(self.query_dense, x if num_query_tokens is None
                          else x[:, :num_query_tokens], queries)
        else:  # the bias layers take every query
            query = heads(self.query_dense, x, length)
            bias = ops.cast(self.position_bias(query, scale=scale), "float32")
            if num_query_tokens is not None:
                query, bias = query[:, :num_query_tokens], bias[..., :num_query_tokens, :]
        attended = scaled_dot_product_attention(query, key, value, bias, scale)
        attended = ops.reshape(ops.cast(attended, self.compute_dtype),
                               (-1, self.num_heads, self.key_dim))
        return ops.reshape(self.output_dense(attended), (batch, queries, hidden_dim))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            use_bias=self.use_bias,
            position_bias=keras.saving.serialize_keras_object(self.position_bias),
        )
        return config
