"""Learned prefix tokens ([CLS], AST's distillation token) and how to split them off."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_astpe")
class ClassToken(keras.layers.Layer):
    """Prepends one learned token: `[batch, length, dim]` -> `[batch, 1 + length, dim]`.

    The [CLS] token, and AST's distillation token (a second `ClassToken`, prepended before
    [CLS] is). No positional encoding of this project gives a prefix token a position: it is
    itself a learned vector, so a learned position added to it would be redundant (a
    converted model's positions of its prefix tokens are folded into the tokens).
    """

    def __init__(self, initializer="truncated_normal", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer=self.initializer, name="token"
        )

    def call(self, sequence):
        token = ops.cast(self.token, sequence.dtype)
        token = ops.broadcast_to(token, (ops.shape(sequence)[0], 1, ops.shape(sequence)[-1]))
        return ops.concatenate([token, sequence], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config


def split_prefix_tokens(sequence, num_prefix_tokens=1):
    """`[batch, p + n, ...]` -> the `p` prefix tokens `[batch, p, ...]` and the rest.

    With `ops.slice`: `ops.split` needs the static length on TensorFlow (a graph traced
    for any number of frames has none), and the gradient of `x[:, 1:]` is slow on
    TensorFlow's CPU.
    """
    shape = ops.shape(sequence)
    inner = [0] * (len(shape) - 2)
    prefix = ops.slice(sequence, [0, 0, *inner], (shape[0], num_prefix_tokens, *shape[2:]))
    rest = ops.slice(sequence, [0, num_prefix_tokens, *inner],
                     (shape[0], shape[1] - num_prefix_tokens, *shape[2:]))
    return prefix, rest


def split_class_token(sequence):
    """`[batch, 1 + n, ...]` -> the [CLS] token `[batch, 1, ...]` and the rest `[batch, n, ...]`."""
    return split_prefix_tokens(sequence, 1)


@keras.saving.register_keras_serializable(package="keras_astpe")
class PrefixPooling(keras.layers.Layer):
    """Token states `[batch, p + n, dim]` -> the mean of the `p` prefix states `[batch, dim]`.

    The embedding a classifier head reads: the [CLS] state (`num_prefix_tokens=1`), or the
    mean of the [CLS] and distillation states (2, as AST does).
    """

    def __init__(self, num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, states):
        prefix = split_prefix_tokens(states, self.num_prefix_tokens)[0]
        if self.num_prefix_tokens == 1:
            return ops.squeeze(prefix, axis=1)
        return ops.mean(prefix, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(num_prefix_tokens=self.num_prefix_tokens)
        return config
