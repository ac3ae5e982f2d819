"""One Transformer encoder block: self-attention and feed-forward with residuals."""

import keras
from keras import ops

from keras_astpe.layers.attention import MultiHeadSelfAttention, deserialize_position_bias
from keras_astpe.layers.gradient_barrier import gradient_barrier
from keras_astpe.layers.residual_dropout import ResidualDropout


@keras.saving.register_keras_serializable(package="keras_astpe")
class TransformerEncoderBlock(keras.layers.Layer):
    """Self-attention + feed-forward, each in a residual branch with dropout.

    Pre-norm (default, what the original code does although its flag reads
    "post-norm"): `x + Dropout(Attention(LN(x)))`, then `x + Dropout(FFN(LN(x)))`.
    Post-norm (`norm_first=False`, the original Transformer): `LN(x + Dropout(Attention(x)))`,
    then `LN(x + Dropout(FFN(x)))`.

    Args:
        num_heads: attention heads; the head size is `hidden_dim // num_heads`.
        intermediate_dim: width of the feed-forward layer (paper: 2048).
        activation: feed-forward activation (paper: ReLU; original AST: GELU).
        dropout: residual dropout rate (paper: 0.1).
        norm_first: pre-norm if True, post-norm if False.
        layer_norm_epsilon: LayerNorm epsilon (paper: 1e-6).
        use_attention_bias: biases in the attention projections (paper: none).
        use_feedforward_bias: biases in the feed-forward layers (the original code: none).
        position_bias: position-bias layer handed to the attention, or None.
    """

    def __init__(self, num_heads, intermediate_dim, activation="relu", dropout=0.1,
                 norm_first=True, layer_norm_epsilon=1e-6, use_attention_bias=False,
                 position_bias=None, use_feedforward_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.use_attention_bias = bool(use_attention_bias)
        self.use_feedforward_bias = bool(use_feedforward_bias)
        self.position_bias = deserialize_position_bias(position_bias)

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by "
                             f"num_heads {self.num_heads}.")

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )

        self.attention_norm = norm("attention_norm")
        self.attention = MultiHeadSelfAttention(
            self.num_heads,
            hidden_dim // self.num_heads,
            use_bias=self.use_attention_bias,
            position_bias=self.position_bias,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.feedforward_norm = norm("feedforward_norm")
        self.feedforward_intermediate = keras.layers.Dense(
            self.intermediate_dim, activation=self.activation,
            use_bias=self.use_feedforward_bias, dtype=self.dtype_policy,
            name="feedforward_intermediate",
        )
        self.feedforward_output = keras.layers.Dense(
            hidden_dim, use_bias=self.use_feedforward_bias, dtype=self.dtype_policy,
            name="feedforward_output"
        )
        self.residual_dropout = ResidualDropout(self.dropout, dtype=self.dtype_policy)
        for layer in (self.attention_norm, self.attention, self.feedforward_norm):
            layer.build(input_shape)
        self.feedforward_intermediate.build(input_shape)
        self.feedforward_output.build((*input_shape[:-1], self.intermediate_dim))

    def _feedforward(self, x):
        # On the [batch * length, dim] token matrix: see `MultiHeadSelfAttention.call`.
        shape = ops.shape(x)
        tokens = ops.reshape(x, (-1, shape[-1]))
        return ops.reshape(self.feedforward_output(self.feedforward_intermediate(tokens)), shape)

    def call(self, x, training=None, num_query_tokens=None):
        """`x` `[batch, L, dim]` -> `[batch, L, dim]`; with `num_query_tokens=n`, the states
        of the first `n` tokens alone (see `MultiHeadSelfAttention.call`)."""
        def residual(branch, x):
            return self.residual_dropout(branch(x), training=training)

        def attention(x):
            return self.attention(x, num_query_tokens=num_query_tokens)

        x = gradient_barrier(x)  # JAX on CPUs: its gradient computed once, see the module
        queries = x if num_query_tokens is None else x[:, :num_query_tokens]
        if self.norm_first:
            x = queries + residual(attention, self.attention_norm(x))
            return x + residual(self._feedforward, self.feedforward_norm(x))
        x = self.attention_norm(queries + residual(attention, x))
        return self.feedforward_norm(x + residual(self._feedforward, x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            norm_first=self.norm_first,
            layer_norm_epsilon=self.layer_norm_epsilon,
            use_attention_bias=self.use_attention_bias,
            use_feedforward_bias=self.use_feedforward_bias,
            position_bias=keras.saving.serialize_keras_object(self.position_bias),
        )
        return config
