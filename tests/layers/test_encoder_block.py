import keras
import numpy as np
import pytest

from keras_astpe.layers import ALiBiBias, TransformerEncoderBlock
from tests import references
from tests.layer_testing import assert_config_round_trip

EPS = 1e-6


def _block(norm_first):
    block = TransformerEncoderBlock(2, 16, norm_first=norm_first, layer_norm_epsilon=EPS)
    block.build((None, None, 8))
    block.set_weights([np.random.randn(*w.shape).astype("float32") * 0.3
                       for w in block.get_weights()])
    return block


def _reference(block, x):
    def weights(layer):
        return [keras.ops.convert_to_numpy(w) for w in layer.weights]

    attention = block.attention
    projections = [keras.ops.convert_to_numpy(d.kernel) for d in
                   (attention.query_dense, attention.key_dense, attention.value_dense,
                    attention.output_dense)]
    ln1, ln2 = weights(block.attention_norm), weights(block.feedforward_norm)
    w1, b1 = weights(block.feedforward_intermediate)
    w2, b2 = weights(block.feedforward_output)

    def attend(h):
        return references.attention(h, *projections)

    def feedforward(h):
        return np.maximum(h @ w1 + b1, 0.0) @ w2 + b2

    if block.norm_first:
        x = x + attend(references.layer_norm(x, *ln1, EPS))
        return x + feedforward(references.layer_norm(x, *ln2, EPS))
    x = references.layer_norm(x + attend(x), *ln1, EPS)
    return references.layer_norm(x + feedforward(x), *ln2, EPS)


@pytest.mark.parametrize("norm_first", [True, False])
def test_matches_reference(norm_first):
    block = _block(norm_first)
    x = np.random.randn(2, 5, 8).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), _reference(block, x),
                               rtol=1e-4, atol=1e-4)


def test_feedforward_without_biases():
    """The original code's Conv1D feed-forward layers have no biases."""
    block = TransformerEncoderBlock(2, 16, layer_norm_epsilon=EPS, use_feedforward_bias=False)
    block.build((None, None, 8))
    assert block.feedforward_intermediate.bias is None
    assert block.feedforward_output.bias is None
    weights = [np.random.randn(*w.shape).astype("float32") * 0.3 for w in block.get_weights()]
    block.set_weights(weights)
    x = np.random.randn(2, 5, 8).astype("float32")
    w1 = keras.ops.convert_to_numpy(block.feedforward_intermediate.kernel)
    w2 = keras.ops.convert_to_numpy(block.feedforward_output.kernel)
    projections = [keras.ops.convert_to_numpy(d.kernel) for d in (
        block.attention.query_dense, block.attention.key_dense, block.attention.value_dense,
        block.attention.output_dense)]
    ln1, ln2 = ([keras.ops.convert_to_numpy(w) for w in norm.weights]
                for norm in (block.attention_norm, block.feedforward_norm))
    h = x + references.attention(references.layer_norm(x, *ln1, EPS), *projections)
    expected = h + np.maximum(references.layer_norm(h, *ln2, EPS) @ w1, 0.0) @ w2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected,
                               rtol=1e-4, atol=1e-4)


def test_residual_dropout_only_in_training():
    block = TransformerEncoderBlock(2, 16, dropout=0.5)
    x = np.random.randn(2, 5, 8).astype("float32")
    inference = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(block(x)), rtol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(block(x, training=True)), inference)


def test_head_size_must_divide():
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoderBlock(3, 16)(np.zeros((1, 5, 8), "float32"))


def test_config_round_trip():
    block = TransformerEncoderBlock(2, 16, activation="gelu", norm_first=False,
                                    use_feedforward_bias=False,
                                    position_bias=ALiBiBias(2, 2, mode="time"))
    assert_config_round_trip(block, np.random.randn(2, 5, 8).astype("float32"), atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("bias", [None, "alibi"])
def test_query_tokens_give_the_first_states_of_the_whole_block(norm_first, bias):
    """`num_query_tokens=n`: the first n rows of the block's output (every token still a
    key and a value)."""
    block = TransformerEncoderBlock(
        2, 16, norm_first=norm_first, layer_norm_epsilon=EPS,
        position_bias=ALiBiBias(2, 2, mode="2d") if bias else None)
    block.build((None, None, 8))
    block.set_weights([np.random.randn(*w.shape).astype("float32") * 0.3
                       for w in block.get_weights()])
    x = np.random.randn(2, 7, 8).astype("float32")
    whole = keras.ops.convert_to_numpy(block(x))
    first = keras.ops.convert_to_numpy(block(x, num_query_tokens=1))
    assert first.shape == (2, 1, 8)
    np.testing.assert_allclose(first, whole[:, :1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[:, 0], keras.ops.convert_to_numpy(block(x[:, :1]))[:, 0],
                           atol=1e-3)  # the other tokens were attended to
