import keras
import numpy as np
import pytest

from keras_astpe.layers.gradient_barrier import gradient_barrier


def test_identity_forward():
    x = np.random.randn(2, 5, 8).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gradient_barrier(x)), x)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the barrier acts on JAX only")
@pytest.mark.parametrize("nan_first", [False, True])
def test_gradient_unchanged_and_materialised_on_jax(nan_first):
    """The gradient is exactly the barrier-free one (also when its first element is NaN,
    which takes the conditional's other branch), and XLA:CPU keeps the conditional that
    stores it: two consumers of a chain of adds no longer each recompute the chain."""
    import jax
    import jax.numpy as jnp

    x = np.random.randn(3, 4, 5).astype("float32")
    weights = np.random.randn(5, 6).astype("float32")
    if nan_first:
        weights[0, 0] = np.nan

    def loss(x, barrier):
        h = (gradient_barrier(x) if barrier else x) + x * 2.0
        return jnp.sum((h @ weights) ** 2) + jnp.sum(jnp.tanh(h))

    with_barrier = jax.jit(jax.grad(lambda x: loss(x, True)))
    expected = jax.grad(lambda x: loss(x, False))(x)
    np.testing.assert_array_equal(np.isnan(with_barrier(x)), np.isnan(expected))
    np.testing.assert_allclose(with_barrier(x), expected, rtol=1e-6)
    assert "conditional(" in with_barrier.lower(x).compile().as_text()
