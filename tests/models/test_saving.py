import json
import zipfile

import keras
import numpy as np
import pytest

from keras_astpe import PE_KINDS, build_model


@pytest.mark.parametrize("pe", PE_KINDS)
def test_save_load_round_trip(pe, tmp_path):
    """`.keras` round trip with safe_mode and no custom_objects gives identical predictions."""
    model = build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128)
    features = np.random.rand(2, 200, 64).astype("float32")
    expected = keras.ops.convert_to_numpy(model.predict(features, verbose=0))
    path = tmp_path / f"{pe}.keras"
    keras.saving.save_model(model, path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored).__name__ == "ASTClassifier"
    assert restored.backbone.position_encoding == pe
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.predict(features, verbose=0)), expected
    )


def _as_saved_before_the_options(path, old_path):
    """Rewrites a `.keras` file's config as models were saved before `alibi_block_cls`
    took strings and before the relative tables recorded their row order."""

    def old_style(node):
        if isinstance(node, dict):
            return {key: True if key in ("alibi_block_cls", "block_patches_to_cls")
                    and value == "all_heads" else old_style(value)
                    for key, value in node.items()
                    if key not in ("relative_row_order", "row_order")}
        if isinstance(node, list):
            return [old_style(value) for value in node]
        return node

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old_path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(old_style(json.loads(data))).encode()
            target.writestr(item, data)


@pytest.mark.parametrize("pe, old_options", [
    ("alibi_2d", {"alibi_block_cls": "all_heads"}),
    ("learned_relative", {"relative_row_order": "query_minus_key"}),
])
def test_models_saved_before_the_options_keep_their_behaviour(pe, old_options, tmp_path):
    """A model saved with the old defaults (all ALiBi heads block [CLS]; relative rows by
    query minus key) loads with them, not with today's defaults."""
    model = build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128,
                        activation=None, **old_options)
    for block in model.backbone.blocks:  # unit-scale relative tables, not the small init
        bias = block.attention.position_bias
        bias.set_weights([np.random.randn(*w.shape) for w in bias.get_weights()])
    features = np.random.rand(2, 128, 64).astype("float32")
    expected = keras.ops.convert_to_numpy(model(features))
    keras.saving.save_model(model, tmp_path / "new.keras")
    _as_saved_before_the_options(tmp_path / "new.keras", tmp_path / "old.keras")
    assert "row_order" not in zipfile.ZipFile(tmp_path / "old.keras").read("config.json").decode()

    restored = keras.saving.load_model(tmp_path / "old.keras", safe_mode=True)
    config = restored.backbone.get_config()
    assert {key: config[key] for key in old_options} == old_options
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(features)), expected,
                               atol=1e-5)
    today = build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128,
                        activation=None)
    today.set_weights(model.get_weights())
    assert np.abs(keras.ops.convert_to_numpy(today(features)) - expected).max() > 1e-4
