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


FEW_FRAMES = (r"Too few frames: the AST needs at least 32 frames \(one patch of 32 frames x 8 "
              r"mel bins\), got {}")


@pytest.mark.parametrize("frames", [20, 0])
def test_too_few_frames_is_a_clear_error(frames):
    layer = _patch_sum_layer((32, 8))  # built for any number of frames
    with pytest.raises(ValueError, match=FEW_FRAMES.format(frames)):
        layer(np.zeros((1, frames, 64), "float32"))
    with pytest.raises(ValueError, match=FEW_FRAMES.format(frames)):
        PatchEmbedding(4, (32, 8))(np.zeros((1, frames, 64), "float32"))
    with pytest.raises(ValueError, match=FEW_FRAMES.format(frames)):
        layer.num_patches(frames, 64)


def test_too_few_mel_bins_is_a_clear_error():
    message = (r"Too few mel bins: the AST needs at least 8 mel bins \(one patch of 32 frames x "
               r"8 mel bins\), got 4\.")
    with pytest.raises(ValueError, match=message):
        PatchEmbedding(4, (32, 8))(np.zeros((1, 64, 4), "float32"))
    with pytest.raises(ValueError, match=message):
        PatchEmbedding(4, (32, 8)).num_patches(64, 4)


def test_too_few_frames_in_a_compiled_function():
    """jax.jit, torch.compile (symbolic frame count) and tf.function with a known frame
    count check while tracing; a TensorFlow graph traced for any number of frames checks
    when it runs."""
    layer = _patch_sum_layer((32, 8))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        with pytest.raises(ValueError, match=FEW_FRAMES.format(10)):
            jax.jit(layer)(np.zeros((1, 10, 64), "float32"))
    elif backend == "tensorflow":
        import tensorflow as tf

        traced = tf.function(layer)
        with pytest.raises(ValueError, match=FEW_FRAMES.format(10)):
            traced(np.zeros((1, 10, 64), "float32"))
        any_length = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 64))])
        assert any_length(np.zeros((1, 64, 64), "float32")).shape == (1, 2, 8, 1)
        runtime = (r"assertion failed: \[Too few frames: the AST needs at least 32 frames "
                   r"\(one patch of 32 frames x 8 mel bins\), got\] \[10\]")
        with pytest.raises(tf.errors.InvalidArgumentError, match=runtime):
            any_length(np.zeros((1, 10, 64), "float32"))
    else:
        import torch

        compiled = torch.compile(layer, backend="eager", dynamic=True)
        assert compiled(torch.zeros(1, 64, 64)).shape == (1, 2, 8, 1)
        with pytest.raises(ValueError, match=FEW_FRAMES.format(10)):
            compiled(torch.zeros(1, 10, 64))


def test_config_round_trip():
    assert_config_round_trip(PatchEmbedding(8, (16, 16), (10, 10)),
                             np.random.rand(2, 40, 36).astype("float32"))
