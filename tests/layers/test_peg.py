import keras
import numpy as np
import pytest

from keras_astpe.layers import PositionEncodingGenerator
from tests import references
from tests.layer_testing import assert_config_round_trip


def _peg(freq, dim, cls_embedding=False, num_prefix_tokens=1):
    layer = PositionEncodingGenerator(freq, cls_embedding=cls_embedding,
                                      num_prefix_tokens=num_prefix_tokens)
    layer.build((None, None, dim))
    layer.set_weights([np.random.randn(*w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def test_equals_depthwise_conv_on_the_grid():
    layer = _peg(freq=4, dim=3)
    kernel, bias = layer.conv.get_weights()
    assert kernel.shape == (3, 3, 3, 1)
    sequence = np.random.randn(2, 1 + 5 * 4, 3).astype("float32")
    out = keras.ops.convert_to_numpy(layer(sequence))
    grid = sequence[:, 1:].reshape(2, 5, 4, 3)
    expected = grid + references.depthwise_conv_same(grid, kernel, bias)
    np.testing.assert_allclose(out[:, 1:], expected.reshape(2, 20, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[:, 0], sequence[:, 0])  # [CLS] passes through


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
def test_depthwise_equals_keras_depthwise_conv(kernel_size):
    # On JAX the PEG computes the convolution as shifted sums: the same "same" padding.
    layer = PositionEncodingGenerator(4, kernel_size=kernel_size)
    layer.build((None, None, 6))
    layer.set_weights([np.random.randn(*w.shape).astype("float32") for w in layer.get_weights()])
    grid = np.random.randn(2, 7, 4, 6).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer._depthwise(grid)),
                               keras.ops.convert_to_numpy(layer.conv(grid)),
                               rtol=1e-5, atol=1e-5)


def test_paper_parameter_count():
    assert _peg(freq=8, dim=768).count_params() == 9 * 768 + 768


def test_optional_cls_embedding():
    layer = _peg(freq=2, dim=3, cls_embedding=True)
    sequence = np.random.randn(1, 5, 3).astype("float32")
    out = keras.ops.convert_to_numpy(layer(sequence))
    cls_position = keras.ops.convert_to_numpy(layer.cls_position)
    np.testing.assert_allclose(out[:, 0], sequence[:, 0] + cls_position, rtol=1e-6)


def test_prefix_tokens_pass_through_and_only_cls_gets_the_embedding():
    """AST's distillation token after [CLS] is no patch: the grid starts after it."""
    layer = _peg(freq=2, dim=3, cls_embedding=True, num_prefix_tokens=2)
    cls_position, kernel, bias = layer.get_weights()
    sequence = np.random.randn(2, 2 + 3 * 2, 3).astype("float32")
    out = keras.ops.convert_to_numpy(layer(sequence))
    grid = sequence[:, 2:].reshape(2, 3, 2, 3)
    expected = grid + references.depthwise_conv_same(grid, kernel, bias)
    np.testing.assert_allclose(out[:, 2:], expected.reshape(2, 6, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], sequence[:, 0] + cls_position, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], sequence[:, 1])


def test_config_without_num_prefix_tokens_has_one():
    config = _peg(freq=2, dim=3).get_config()
    assert config.pop("num_prefix_tokens") == 1
    assert PositionEncodingGenerator.from_config(config).num_prefix_tokens == 1


def test_config_round_trip():
    assert_config_round_trip(_peg(freq=2, dim=3, cls_embedding=True),
                             np.random.randn(2, 7, 3).astype("float32"), atol=1e-5)
