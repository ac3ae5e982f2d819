"""Serialization check shared by the layer tests (in the spirit of keras' run_layer_test)."""

import keras
import numpy as np


def assert_config_round_trip(layer, inputs, atol=1e-6):
    """A layer rebuilt from its config, with the same weights, gives the same outputs."""
    expected = keras.ops.convert_to_numpy(layer(inputs))
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)
    restored(inputs)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(inputs)), expected, atol=atol)
    assert restored.get_config() == layer.get_config()
    return restored
