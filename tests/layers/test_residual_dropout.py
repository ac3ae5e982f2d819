import keras
import numpy as np
import pytest

from keras_astpe.layers.residual_dropout import ResidualDropout


@pytest.mark.parametrize("shape", [(4, 125, 401), (3, 5, 7)])  # even and odd sizes
def test_drops_at_the_rate_and_scales_the_rest(shape):
    layer = ResidualDropout(0.1, seed=3)
    x = np.random.rand(*shape).astype("float32") + 0.5
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.9, rtol=1e-6)
    if x.size > 100_000:  # 200,500 draws: the dropped fraction is within 0.004 of 0.1
        assert abs(1 - kept.mean() - 0.1) < 0.004
    again = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.array_equal(again != 0, kept)  # a new mask on every call


def test_identity_outside_training_and_rate_bounds():
    x = np.random.rand(2, 3, 4).astype("float32") + 0.5
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ResidualDropout(0.1)(x)), x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ResidualDropout(0.0)(x, training=True)), x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ResidualDropout(1.0)(x, training=True)), np.zeros_like(x))


def test_bfloat16_inputs_stay_bfloat16():
    layer = ResidualDropout(0.1, dtype="mixed_bfloat16")
    y = layer(keras.ops.ones((2, 8, 16), dtype="bfloat16"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    values = set(np.unique(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))))
    assert values <= {0.0, float(keras.ops.convert_to_numpy(
        keras.ops.cast(keras.ops.cast(1 / 0.9, "bfloat16"), "float32")))}
