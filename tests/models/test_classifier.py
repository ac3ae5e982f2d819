"""ASTClassifier: the head on the prefix tokens, its options and their configs."""

import warnings

import keras
import numpy as np
import pytest

from keras_astpe import ASTClassifier, build_model
from tests import references

TINY = {"preset": "ast-pe-tiny", "num_classes": 3}


def _weights(layer):
    return [keras.ops.convert_to_numpy(w) for w in layer.weights]


@pytest.mark.parametrize("distillation_token", [False, True])
def test_head_reads_the_mean_of_the_prefix_states(distillation_token):
    """[CLS] alone, or (x[:, 0] + x[:, 1]) / 2 with a distillation token (AST), through
    AST's head LayerNorm and the dense layer."""
    bare = build_model("absolute", activation=None, distillation_token=distillation_token,
                       **TINY)
    model = ASTClassifier(bare.backbone, 3, activation=None, head_norm=True,
                          head_norm_epsilon=1e-5)
    model.head_norm.set_weights([np.random.randn(64), np.random.randn(64)])
    features = np.random.rand(2, 64, 64).astype("float32")
    states = keras.ops.convert_to_numpy(model.backbone(features))
    pooled = states[:, :2].mean(axis=1) if distillation_token else states[:, 0]
    kernel, bias = _weights(model.head)
    expected = references.layer_norm(pooled, *_weights(model.head_norm), 1e-5) @ kernel + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(features)), expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.pool(states)), pooled,
                               atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.classify(model.pool(states))), expected,
        rtol=1e-4, atol=1e-4)


def test_default_head_is_a_dense_layer_on_cls():
    model = build_model("none", activation=None, **TINY)
    assert model.head_norm is None
    features = np.random.rand(2, 64, 64).astype("float32")
    cls_state = keras.ops.convert_to_numpy(model.backbone(features))[:, 0]
    kernel, bias = _weights(model.head)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(features)),
                               cls_state @ kernel + bias, rtol=1e-4, atol=1e-5)


def test_config_from_before_the_head_options_keeps_the_head():
    model = build_model("none", **TINY)
    config = model.get_config()
    assert (config["head_norm"], config["head_norm_epsilon"]) == (False, 1e-5)
    old = {k: v for k, v in config.items() if k not in ("head_norm", "head_norm_epsilon")}
    assert ASTClassifier.from_config(old).get_config() == config


def test_save_and_load_with_the_ast_head(tmp_path):
    bare = build_model("time_alibi", distillation_token=True, embedding_norm=False, **TINY)
    model = ASTClassifier(bare.backbone, 3, head_norm=True, head_norm_epsilon=1e-12)
    features = np.random.rand(2, 64, 64).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.get_config() == model.get_config()
    assert restored.head_norm.epsilon == 1e-12
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(features)),
                               keras.ops.convert_to_numpy(model(features)), atol=1e-6)


@pytest.mark.parametrize("activation, loss, metrics", [
    ("sigmoid", keras.losses.BinaryCrossentropy, ["mAP", "AUC"]),
    ("softmax", keras.losses.CategoricalCrossentropy, ["accuracy"]),
    (None, keras.losses.BinaryCrossentropy, ["mAP", "AUC"]),
])
def test_compile_defaults_are_the_tasks(activation, loss, metrics):
    """`compile()` alone: the paper's Adam with gradient clipping, the loss and metrics of
    the labels (from logits without an activation); given arguments are kept."""
    model = build_model("none", activation=activation, **TINY)
    model.compile(learning_rate=1e-3)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.clipvalue == 1.0
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(1e-3)
    assert isinstance(model.loss, loss) and model.loss.from_logits == (activation is None)
    x = np.random.rand(4, 64, 64).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 0], 3)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", *metrics}
    model.compile(optimizer="sgd", loss="mse", metrics=None)
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.loss == "mse"


def test_a_compiled_model_loads_compiled(tmp_path):
    """`compile` is the task's, so loading compiles through `compile_from_config`."""
    model = build_model("none", activation="softmax", **TINY)
    model.compile(learning_rate=1e-3)
    x = np.random.rand(4, 64, 64).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 0], 3)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "compiled.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        restored = keras.saving.load_model(tmp_path / "compiled.keras")
    assert isinstance(restored.loss, keras.losses.CategoricalCrossentropy)
    assert restored.optimizer.clipvalue == 1.0
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 1
    assert set(restored.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}
