import keras
import numpy as np
import pytest

from keras_astpe import PE_KINDS, build_model


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("pe", PE_KINDS)
def test_mixed_precision_trains_with_float32_softmax(pe, policy):
    if policy == "mixed_float16" and keras.backend.backend() == "jax":
        pytest.skip("XLA:CPU has no float16 dot kernels; mixed_float16 is a GPU policy on JAX")
    model = build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128, dtype=policy)
    assert model.backbone.dtype_policy.name == policy
    block = model.backbone.blocks[0]
    assert block.attention.query_dense.compute_dtype == policy.split("_")[1]
    if block.attention.position_bias is not None:
        assert block.attention.position_bias.compute_dtype == "float32"
    features = np.random.rand(4, 128, 64).astype("float32")
    targets = (np.random.rand(4, 3) > 0.5).astype("float32")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(features, targets, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    scores = keras.ops.convert_to_numpy(model.predict(features, verbose=0))
    assert scores.dtype == np.float32 and np.all(np.isfinite(scores))


@pytest.mark.parametrize("pe", PE_KINDS)
def test_mixed_bfloat16_attention_logits_biases_and_softmax_are_float32(pe, monkeypatch):
    # What reaches the attention kernels (`dot_product_attention` on PyTorch, the softmax
    # of the attention's own products on TensorFlow, its exp on JAX) under mixed_bfloat16:
    # queries, keys, values, the position bias, all float32; the projections around them
    # run in bfloat16.
    kernel = {"torch": "dot_product_attention", "jax": "exp"}.get(keras.backend.backend(),
                                                                   "softmax")
    seen = []

    def spy(name, function):
        def wrapped(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if hasattr(a, "dtype")]
            seen.append((name, {keras.backend.standardize_dtype(t.dtype) for t in tensors}))
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(keras.ops, kernel, spy(kernel, getattr(keras.ops, kernel)))
    model = build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128,
                        dtype="mixed_bfloat16")
    scores = model(np.random.rand(2, 128, 64).astype("float32"), training=True)
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    attention = [dtypes for name, dtypes in seen if name == kernel]
    assert len(attention) == len(model.backbone.blocks)
    assert all(dtypes == {"float32"} for _, dtypes in seen), seen
    for block in model.backbone.blocks:
        assert block.attention.query_dense.compute_dtype == "bfloat16"
        bias = block.attention.position_bias
        if bias is not None:
            query = keras.ops.zeros((2, 33, 4, 16), dtype="float32")
            output = bias(query)
            assert keras.backend.standardize_dtype(output.dtype) == "float32"
            assert all(weight.dtype == "float32" for weight in bias.weights)
