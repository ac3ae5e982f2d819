import keras
import numpy as np
import pytest

from keras_astpe.layers import PatchEmbedding
from tests.layer_testing import assert_config_round_trip


def _patch_sum_layer(patch_size, patch_stride=None):
    layer = PatchEmbedding(1, patch_size, patch_stride)
    layer.build((None, None, 64))
    kernel, bias = layer.get_weights()
    layer.set_weights([np.ones_like(kernel), np.zeros_like(bias)])
    return layer


def test_tokens_are_patch_sums_in_time_major_order():
    features = np.random.rand(2, 96, 64).astype("float32")
    grid = keras.ops.convert_to_numpy(_patch_sum_layer((32, 8))(features))
    assert grid.shape == (2, 3, 8, 1)
    expected = features.reshape(2, 3, 32, 8, 8).sum(axis=(2, 4))
    np.testing.assert_allclose(grid[..., 0], expected, rtol=1e-5)
    # Flattened row by row, token t * 8 + f is the patch at time chunk t, band f.
    tokens = grid.reshape(2, -1)
    np.testing.assert_allclose(tokens[:, 1 * 8 + 5], expected[:, 1, 5], rtol=1e-5)


def test_paper_grid_and_partial_last_patch_dropped():
    layer = PatchEmbedding(4, (32, 8))
    assert layer.num_patches(992, 64) == (31, 8)
    # 5 s at 16 kHz gives 498 frames: 15 whole patches, the last 18 frames are unused.
    assert layer.num_patches(498, 64) == (15, 8)
    features = np.random.rand(1, 498, 64).astype("float32")
    sums = keras.ops.convert_to_numpy(_patch_sum_layer((32, 8))(features))[0, :, :, 0]
    np.testing.assert_allclose(
        sums, features[0, :480].reshape(15, 32, 8, 8).sum(axis=(1, 3)), rtol=1e-5
    )


def test_overlapping_ast_patches():
    layer = PatchEmbedding(4, (16, 16), (10, 10))
    assert layer.num_patches(1024, 128) == (101, 12)
    features = np.random.rand(1, 46, 128).astype("float32")
    sums = keras.ops.convert_to_numpy(_patch_sum_layer((16, 16), (10, 10))(features))
    np.testing.assert_allclose(sums[0, 2, 3, 0], features[0, 20:36, 30:46].sum(), rtol=1e-5)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than one patch"):
        PatchEmbedding(4, (32, 8))(np.zeros((1, 20, 64), "float32"))


def test_config_round_trip():
    assert_config_round_trip(PatchEmbedding(8, (16, 16), (10, 10)),
                             np.random.rand(2, 40, 36).astype("float32"))
