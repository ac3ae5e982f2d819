import keras
import numpy as np
import pytest

from keras_astpe.layers import ClassToken
from keras_astpe.layers.class_token import PrefixPooling, split_class_token, split_prefix_tokens
from tests.layer_testing import assert_config_round_trip


def test_prepends_one_learned_token():
    layer = ClassToken()
    sequence = np.random.rand(2, 3, 4).astype("float32")
    out = keras.ops.convert_to_numpy(layer(sequence))
    token = keras.ops.convert_to_numpy(layer.token)
    np.testing.assert_array_equal(out[:, 1:], sequence)
    np.testing.assert_array_equal(out[:, :1], np.broadcast_to(token, (2, 1, 4)))


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 1, 3), (1, 4, 2, 3)])
def test_split_class_token(shape):
    sequence = np.random.rand(*shape).astype("float32")
    cls_token, rest = (keras.ops.convert_to_numpy(x) for x in split_class_token(sequence))
    np.testing.assert_array_equal(cls_token, sequence[:, :1])
    np.testing.assert_array_equal(rest, sequence[:, 1:])


def test_split_prefix_tokens():
    sequence = np.random.rand(2, 6, 3).astype("float32")
    prefix, rest = (keras.ops.convert_to_numpy(x) for x in split_prefix_tokens(sequence, 2))
    np.testing.assert_array_equal(prefix, sequence[:, :2])
    np.testing.assert_array_equal(rest, sequence[:, 2:])


def test_split_class_token_of_unknown_length_in_a_tensorflow_graph():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow graphs have lengths unknown while tracing")
    import tensorflow as tf

    split = tf.function(split_class_token, input_signature=[tf.TensorSpec((None, None, 3))])
    sequence = np.random.rand(2, 5, 3).astype("float32")
    cls_token, rest = split(sequence)
    np.testing.assert_array_equal(cls_token.numpy(), sequence[:, :1])
    np.testing.assert_array_equal(rest.numpy(), sequence[:, 1:])


def test_config_round_trip():
    assert_config_round_trip(ClassToken(), np.random.rand(2, 3, 4).astype("float32"))


@pytest.mark.parametrize("num_prefix_tokens", [1, 2])
def test_prefix_pooling_is_the_mean_of_the_prefix_states(num_prefix_tokens):
    states = np.random.rand(2, 6, 3).astype("float32")
    pooled = keras.ops.convert_to_numpy(PrefixPooling(num_prefix_tokens)(states))
    np.testing.assert_allclose(pooled, states[:, :num_prefix_tokens].mean(axis=1), rtol=1e-6)


def test_prefix_pooling_config_round_trip():
    assert_config_round_trip(PrefixPooling(2), np.random.rand(2, 5, 3).astype("float32"))
