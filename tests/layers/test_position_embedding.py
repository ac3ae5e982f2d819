import keras
import numpy as np
import tensorflow as tf

from keras_astpe.layers import AbsolutePositionEmbedding
from tests.layer_testing import assert_config_round_trip


def _layer(grid_shape, frequency_only=False, dim=3):
    layer = AbsolutePositionEmbedding(grid_shape, frequency_only=frequency_only)
    layer.build((None, None, grid_shape[1], dim))
    layer.set_weights([np.random.randn(*layer.get_weights()[0].shape).astype("float32")])
    return layer


def test_adds_the_table_at_the_trained_size():
    layer = _layer((4, 2))
    grid = np.random.randn(2, 4, 2, 3).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(grid)),
                               grid + layer.get_weights()[0][None], rtol=1e-6)


def test_other_lengths_use_bilinear_interpolation():
    layer = _layer((5, 4))
    table = layer.get_weights()[0]
    for time, freq in ((9, 4), (3, 4), (7, 6)):
        zeros = np.zeros((1, time, freq, 3), "float32")
        # tf.image.resize (half-pixel centres, no antialiasing) is the independent reference.
        expected = tf.image.resize(table, (time, freq), method="bilinear").numpy()
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(zeros))[0], expected,
                                   rtol=1e-5, atol=1e-6)


def test_frequency_only_is_shared_by_all_time_chunks():
    layer = _layer((31, 8), frequency_only=True, dim=5)
    assert layer.get_weights()[0].shape == (8, 5)
    out = keras.ops.convert_to_numpy(layer(np.zeros((2, 6, 8, 5), "float32")))
    np.testing.assert_allclose(out, np.broadcast_to(layer.get_weights()[0], (2, 6, 8, 5)))


def test_config_round_trip():
    assert_config_round_trip(_layer((4, 2)), np.random.randn(2, 6, 2, 3).astype("float32"))
