import keras
import numpy as np
import pytest

from keras_astpe.layers import ALiBiBias, LearnedRelativeBias, MultiHeadSelfAttention
from tests import references
from tests.layer_testing import assert_config_round_trip


def _attention(position_bias=None, dim=8, heads=2):
    layer = MultiHeadSelfAttention(heads, dim // heads, position_bias=position_bias)
    layer.build((None, None, dim))
    layer.set_weights([np.random.randn(*w.shape).astype("float32") * 0.5
                       for w in layer.get_weights()])
    return layer


def _projections(layer):
    return [keras.ops.convert_to_numpy(d.kernel) for d in
            (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)]


def test_no_projection_biases_by_default():
    layer = _attention()
    assert len(layer.weights) == 4
    assert len(_attention_with_bias().weights) == 8


def _attention_with_bias():
    layer = MultiHeadSelfAttention(2, 4, use_bias=True)
    layer.build((None, None, 8))
    return layer


def test_plain_attention_matches_reference():
    layer = _attention()
    x = np.random.randn(2, 5, 8).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               references.attention(x, *_projections(layer)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["alibi", "relative"])
def test_bias_is_added_before_scaling(kind):
    if kind == "alibi":
        position_bias = ALiBiBias(2, freq_patches=2, mode="2d", slopes="code")
    else:
        position_bias = LearnedRelativeBias((2, 2))
    layer = _attention(position_bias)
    x = np.random.randn(2, 5, 8).astype("float32")
    wq, wk, wv, wo = _projections(layer)
    query = np.einsum("bld,dhk->blhk", x, wq)
    bias = keras.ops.convert_to_numpy(position_bias(query))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               references.attention(x, wq, wk, wv, wo, bias),
                               rtol=1e-4, atol=1e-5)


def test_config_round_trip_keeps_the_position_bias():
    layer = _attention(LearnedRelativeBias((2, 2)))
    restored = assert_config_round_trip(layer, np.random.randn(2, 5, 8).astype("float32"),
                                        atol=1e-5)
    assert isinstance(restored.position_bias, LearnedRelativeBias)
