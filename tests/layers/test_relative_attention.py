import keras
import numpy as np
import pytest

from keras_astpe.layers import LearnedRelativeBias
from tests.layer_testing import assert_config_round_trip


def _naive(query, time_table, freq_table, freq, trained_time, prefix=1):
    """R_ij = Q_i . E^t[dt] + Q_i . E^f[df], pair by pair; [CLS] (every one of the `prefix`
    tokens) at distance 0; dt = t_j - t_i for query i and key j (the original code)."""
    batch, length, heads, _ = query.shape
    trained_freq = (freq_table.shape[0] + 1) // 2
    out = np.zeros((batch, heads, length, length), "float32")
    for i in range(length):
        for j in range(length):
            if i < prefix or j < prefix:
                dt = df = 0
            else:
                dt = (j - prefix) // freq - (i - prefix) // freq
                df = (j - prefix) % freq - (i - prefix) % freq
            dt = np.clip(dt, 1 - trained_time, trained_time - 1)
            row = time_table[dt + trained_time - 1] + freq_table[df + trained_freq - 1]
            out[:, :, i, j] = np.einsum("bhd,d->bh", query[:, i], row)
    return out


def _layer(grid_shape, head_dim, **kwargs):
    layer = LearnedRelativeBias(grid_shape, **kwargs)
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


def test_every_prefix_token_is_at_distance_zero():
    """AST's distillation token after [CLS]: both are at distance 0 from every token."""
    layer = _layer((3, 2), 4, num_prefix_tokens=2)
    query = np.random.randn(2, 2 + 3 * 2, 2, 4).astype("float32")
    time_table, freq_table = layer.get_weights()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(query)),
        _naive(query, time_table, freq_table, freq=2, trained_time=3, prefix=2),
        rtol=1e-5, atol=1e-5,
    )


def test_rows_are_key_minus_query():
    """Row 0 of E^t is the key T - 1 chunks before the query (the original code's order)."""
    layer = _layer((3, 1), 1)
    time_table = np.zeros((5, 1), "float32")
    time_table[0] = 1.0  # distance t_j - t_i = -2
    layer.set_weights([time_table, np.zeros((1, 1), "float32")])
    bias = keras.ops.convert_to_numpy(layer(np.ones((1, 4, 1, 1), "float32")))[0, 0]
    expected = np.zeros((4, 4))
    expected[3, 1] = 1.0  # query t2 (token 3), key t0 (token 1)
    np.testing.assert_array_equal(bias, expected)


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


def test_config_without_num_prefix_tokens_has_one():
    config = _layer((3, 2), 4).get_config()
    assert config.pop("num_prefix_tokens") == 1
    assert LearnedRelativeBias.from_config(config).num_prefix_tokens == 1


def test_config_round_trip():
    assert_config_round_trip(_layer((3, 2), 4), np.random.randn(1, 7, 2, 4).astype("float32"),
                             atol=1e-5)


@pytest.mark.parametrize("prefix, time", [(1, 3), (2, 3), (1, 6)])
def test_scale_scales_the_bias(prefix, time):
    # time 6 on a grid trained for 3: the clipped distances are scaled too.
    layer = _layer((3, 2), 4, num_prefix_tokens=prefix)
    query = np.random.randn(2, prefix + time * 2, 2, 4).astype("float32")
    scale = 1 / 48**0.5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(query, scale=scale)),
                               scale * keras.ops.convert_to_numpy(layer(query)),
                               rtol=1e-5, atol=1e-6)
