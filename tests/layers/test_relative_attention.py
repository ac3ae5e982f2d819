import keras
import numpy as np
import pytest

from keras_astpe.layers import LearnedRelativeBias
from tests.layer_testing import assert_config_round_trip


def _naive(query, time_table, freq_table, freq, trained_time):
    """R_ij = Q_i . E^t[dt] + Q_i . E^f[df], pair by pair; [CLS] at distance 0."""
    batch, length, heads, _ = query.shape
    trained_freq = (freq_table.shape[0] + 1) // 2
    out = np.zeros((batch, heads, length, length), "float32")
    for i in range(length):
        for j in range(length):
            if i == 0 or j == 0:
                dt = df = 0
            else:
                dt = (i - 1) // freq - (j - 1) // freq
                df = (i - 1) % freq - (j - 1) % freq
            dt = np.clip(dt, 1 - trained_time, trained_time - 1)
            row = time_table[dt + trained_time - 1] + freq_table[df + trained_freq - 1]
            out[:, :, i, j] = np.einsum("bhd,d->bh", query[:, i], row)
    return out


def _layer(grid_shape, head_dim):
    layer = LearnedRelativeBias(grid_shape)
    layer.build((None, None, 2, head_dim))
    layer.set_weights([np.random.randn(*w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def test_table_sizes():
    layer = _layer((31, 8), 64)
    assert [tuple(w.shape) for w in layer.weights] == [(61, 64), (15, 64)]


@pytest.mark.parametrize("time", [3, 6, 1])
def test_equals_naive_pair_loop(time):
    """At the trained grid (3 chunks), longer (distances clipped) and a single chunk."""
    layer = _layer((3, 2), 4)
    query = np.random.randn(2, 1 + time * 2, 2, 4).astype("float32")
    time_table, freq_table = layer.get_weights()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(query)),
        _naive(query, time_table, freq_table, freq=2, trained_time=3),
        rtol=1e-5, atol=1e-5,
    )


def test_gradients_reach_the_tables():
    layer = _layer((3, 2), 4)
    query = np.random.randn(1, 7, 2, 4).astype("float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.sum(layer(query) ** 2)
        grads = tape.gradient(loss, layer.trainable_variables)
    elif keras.backend.backend() == "jax":
        import jax

        def loss_fn(tables):
            return keras.ops.sum(layer.stateless_call(tables, [], query)[0] ** 2)

        grads = jax.grad(loss_fn)([v.value for v in layer.trainable_variables])
    else:
        loss = keras.ops.sum(layer(query) ** 2)
        loss.backward()
        grads = [v.value.grad for v in layer.trainable_variables]
    assert all(float(np.abs(keras.ops.convert_to_numpy(g)).sum()) > 0 for g in grads)


def test_config_round_trip():
    assert_config_round_trip(_layer((3, 2), 4), np.random.randn(1, 7, 2, 4).astype("float32"),
                             atol=1e-5)
