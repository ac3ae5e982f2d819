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
