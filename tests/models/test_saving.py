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
