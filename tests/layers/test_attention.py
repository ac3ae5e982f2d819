import keras
import numpy as np
import pytest

from keras_astpe.layers import ALiBiBias, LearnedRelativeBias, MultiHeadSelfAttention
from keras_astpe.layers.attention import scaled_dot_product_attention
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


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's own formulation")
def test_jax_attention_gradients_are_the_softmaxs():
    # On JAX the normalisation follows the product: its gradient must still be softmax's,
    # for the queries, keys, values and the position bias (large logits included).
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    query, key, value = (rng.normal(size=(2, 6, 3, 4)).astype("float32") for _ in range(3))
    bias = 20 * rng.normal(size=(2, 3, 6, 6)).astype("float32")
    weights = rng.normal(size=(2, 6, 3, 4)).astype("float32")

    def softmax_attention(query, key, value, bias, scale):
        logits = jnp.einsum("bthd,bshd->bhts", query * scale, key) + bias
        return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, axis=-1), value)

    def gradients(attention):
        loss = lambda *args: jnp.sum(attention(*args, 0.5) * weights)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1, 2, 3))(query, key, value, bias)

    for ours, softmax in zip(gradients(scaled_dot_product_attention),
                             gradients(softmax_attention), strict=True):
        np.testing.assert_allclose(ours, softmax, rtol=1e-4, atol=1e-5)


def test_config_round_trip_keeps_the_position_bias():
    layer = _attention(LearnedRelativeBias((2, 2)))
    restored = assert_config_round_trip(layer, np.random.randn(2, 5, 8).astype("float32"),
                                        atol=1e-5)
    assert isinstance(restored.position_bias, LearnedRelativeBias)


def test_projection_weights_keep_their_layout():
    """The projections run on token matrices, but their weights keep the shapes (and so the
    checkpoints) of per-head projections: kernels [dim, heads, head_dim] and
    [heads, head_dim, dim]."""
    layer = _attention_with_bias()
    shapes = {"/".join(w.path.split("/")[-2:]): tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "query/kernel": (8, 2, 4), "query/bias": (2, 4),
        "key/kernel": (8, 2, 4), "key/bias": (2, 4),
        "value/kernel": (8, 2, 4), "value/bias": (2, 4),
        "attention_output/kernel": (2, 4, 8), "attention_output/bias": (8,),
    }


def test_projection_biases_match_reference():
    layer = MultiHeadSelfAttention(2, 4, use_bias=True)
    layer.build((None, None, 8))
    layer.set_weights([np.random.randn(*w.shape).astype("float32") * 0.5
                       for w in layer.get_weights()])
    x = np.random.randn(2, 5, 8).astype("float32")
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (
        [keras.ops.convert_to_numpy(w) for w in (d.kernel, d.bias)]
        for d in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense))
    q, k, v = (np.einsum("bld,dhk->blhk", x, w) + b for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    probs = references.softmax(np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(4))
    expected = np.einsum("bqhk,hkd->bqd", np.einsum("bhqs,bshk->bqhk", probs, v), wo) + bo
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected,
                               rtol=1e-4, atol=1e-5)
