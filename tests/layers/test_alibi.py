import keras
import numpy as np
import pytest

from keras_astpe.layers import ALiBiBias, alibi_slopes
from tests.layer_testing import assert_config_round_trip

# A 2 x 2 grid: patches p0 (t0, f0), p1 (t0, f1), p2 (t1, f0), p3 (t1, f1); token 0 is [CLS].
DT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], "float32")
DF = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], "float32")


def _with_cls(patch_bias, block):
    full = np.zeros((5, 5), "float32")
    full[1:, 1:] = patch_bias
    if block:
        full[1:, 0] = -1e9
    return full


def _bias(layer, length=5):
    return keras.ops.convert_to_numpy(layer(np.zeros((1, length, layer.num_heads, 2), "float32")))


def test_slopes_paper_and_code_rules():
    # Paper: m = 0.5 ** (16 h / N_h); 12 heads, 6 per axis -> 2 ** (-4/3 h).
    np.testing.assert_allclose(alibi_slopes(12, 6, "paper"), 2.0 ** (-4.0 / 3.0 * np.arange(1, 7)))
    np.testing.assert_allclose(alibi_slopes(12, 6, "code"), [2**-1, 2**-2.4, 2**-3.8, 2**-5.2,
                                                            2**-6.6, 2**-8])
    assert alibi_slopes(12, 12, "paper")[-1] == pytest.approx(2.0**-16)
    np.testing.assert_allclose(alibi_slopes(12, 12, "code")[[0, -1]], [0.5, 2**-8])


@pytest.mark.parametrize("slopes, m", [("paper", [1 / 16, 1 / 256]), ("code", [0.5, 1 / 256])])
def test_2d_bias_equals_hand_computed(slopes, m):
    """Default, as the original code: time heads block [CLS], frequency heads do not."""
    bias = _bias(ALiBiBias(4, freq_patches=2, mode="2d", slopes=slopes))
    assert bias.shape == (1, 4, 5, 5)
    expected = [_with_cls(-m[0] * DT, True), _with_cls(-m[1] * DT, True),
                _with_cls(-m[0] * DF, False), _with_cls(-m[1] * DF, False)]
    np.testing.assert_allclose(bias[0], np.stack(expected), rtol=1e-6)


@pytest.mark.parametrize("blocking, blocked_heads", [("time_heads", [1, 1, 0, 0]),
                                                     ("all_heads", [1, 1, 1, 1]),
                                                     ("none", [0, 0, 0, 0])])
def test_2d_cls_blocking_options(blocking, blocked_heads):
    bias = _bias(ALiBiBias(4, freq_patches=2, mode="2d", slopes="code",
                           block_patches_to_cls=blocking))
    m = [0.5, 1 / 256]
    distances = [-m[0] * DT, -m[1] * DT, -m[0] * DF, -m[1] * DF]
    expected = [_with_cls(d, b) for d, b in zip(distances, blocked_heads, strict=True)]
    np.testing.assert_allclose(bias[0], np.stack(expected), rtol=1e-6)


def test_time_bias_uses_time_distance_in_every_head():
    bias = _bias(ALiBiBias(2, freq_patches=2, mode="time", slopes="code"))
    expected = [_with_cls(-0.5 * DT, True), _with_cls(-(2.0**-8) * DT, True)]
    np.testing.assert_allclose(bias[0], np.stack(expected), rtol=1e-6)


def test_cls_rule():
    time_head, freq_head = _bias(ALiBiBias(2, freq_patches=2, mode="2d"))[0]
    np.testing.assert_array_equal(time_head[0], 0.0)  # [CLS] attends to every patch
    np.testing.assert_array_equal(freq_head[0], 0.0)
    np.testing.assert_array_equal(time_head[1:, 0], -1e9)  # patches cannot attend to [CLS]
    np.testing.assert_array_equal(freq_head[1:, 0], 0.0)  # ... except in frequency heads
    open_ = _bias(ALiBiBias(2, freq_patches=2, mode="2d", block_patches_to_cls="none"))[0]
    np.testing.assert_array_equal(open_[:, :, 0], 0.0)


@pytest.mark.parametrize("mode", ["2d", "time"])
def test_time_heads_are_all_heads_in_time_mode_only(mode):
    time_heads, all_heads = (_bias(ALiBiBias(4, 2, mode=mode, block_patches_to_cls=b))
                             for b in ("time_heads", "all_heads"))
    assert np.array_equal(time_heads, all_heads) == (mode == "time")


@pytest.mark.parametrize("value", [True, "time"])
def test_unknown_cls_blocking_is_refused(value):
    with pytest.raises(ValueError, match="Unknown block_patches_to_cls"):
        ALiBiBias(4, freq_patches=2, mode="2d", block_patches_to_cls=value)


@pytest.mark.parametrize("mode", ["2d", "time"])
def test_a_second_prefix_token_is_treated_as_cls(mode):
    """AST's distillation token: at distance 0, blocked for patches where [CLS] is."""
    one = _bias(ALiBiBias(4, 2, mode=mode, slopes="code"))[0]
    two = _bias(ALiBiBias(4, 2, mode=mode, slopes="code", num_prefix_tokens=2), length=6)[0]
    as_cls = [0, 0, 1, 2, 3, 4]  # token -> the token of the one-prefix sequence it acts as
    np.testing.assert_array_equal(two, one[:, as_cls][:, :, as_cls])


def test_any_grid_length():
    bias = _bias(ALiBiBias(2, freq_patches=2, mode="time", slopes="code"), length=1 + 7 * 2)
    assert bias.shape == (1, 2, 15, 15)
    assert bias[0, 0, 1, 14] == pytest.approx(-0.5 * 6)  # p0 (t0) to p13 (t6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="even"):
        ALiBiBias(3, 2, mode="2d")
    with pytest.raises(ValueError, match="mode"):
        ALiBiBias(4, 2, mode="freq")
    with pytest.raises(ValueError, match="slope rule"):
        _bias(ALiBiBias(4, 2, slopes="linear"))
    with pytest.raises(ValueError, match="block_patches_to_cls 'freq_heads'"):
        ALiBiBias(4, 2, block_patches_to_cls="freq_heads")


def test_config_without_num_prefix_tokens_has_one():
    config = ALiBiBias(4, 2).get_config()
    assert config.pop("num_prefix_tokens") == 1
    assert ALiBiBias.from_config(config).num_prefix_tokens == 1


@pytest.mark.parametrize("blocking", ["time_heads", "all_heads", "none"])
def test_config_round_trip(blocking):
    restored = assert_config_round_trip(
        ALiBiBias(4, 2, mode="2d", slopes="code", block_patches_to_cls=blocking),
        np.zeros((1, 9, 4, 2), "float32"))
    assert restored.block_patches_to_cls == blocking


@pytest.mark.parametrize("mode", ["2d", "time"])
@pytest.mark.parametrize("block", ["time_heads", "all_heads", "none"])
@pytest.mark.parametrize("prefix", [1, 2])
def test_scale_scales_the_bias_but_not_the_blocking(mode, block, prefix):
    layer = ALiBiBias(4, 2, mode=mode, block_patches_to_cls=block, num_prefix_tokens=prefix)
    query = np.zeros((1, prefix + 6, 4, 2), "float32")
    scale = 1 / 48**0.5
    unscaled = keras.ops.convert_to_numpy(layer(query))
    scaled = keras.ops.convert_to_numpy(layer(query, scale=scale))
    blocked = unscaled == -1e9
    assert blocked.any() == (block != "none")
    np.testing.assert_array_equal(scaled[blocked], -1e9)
    np.testing.assert_allclose(scaled[~blocked], scale * unscaled[~blocked], rtol=1e-6)
