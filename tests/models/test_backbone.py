import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe import PE_KINDS, ASTBackbone, build_model

TINY = {"preset": "ast-pe-tiny", "num_classes": 3}


def test_pe_kinds_are_the_seven_rows_of_the_paper():
    assert PE_KINDS == ("none", "absolute", "alibi_2d", "time_alibi", "learned_relative",
                        "conditional", "conditional_absolute")


def test_paper_parameter_counts():
    """Trainable PE parameters of the `ast-pe` preset, as the difference to `pe="none"`."""
    counts = {pe: build_model(pe).count_params() for pe in PE_KINDS}
    extra = {pe: counts[pe] - counts["none"] for pe in PE_KINDS}
    assert extra == {
        "none": 0,
        "absolute": 248 * 768,  # 190,464: no position for [CLS]
        "alibi_2d": 0,
        "time_alibi": 8 * 768,
        "learned_relative": 12 * (61 + 15) * 64,  # 58,368
        "conditional": 5 * (9 * 768 + 768),  # 38,400
        "conditional_absolute": 38_400 + 190_464,
    }
    with_cls = build_model("conditional", peg_cls_embedding=True).count_params()
    assert with_cls - counts["conditional"] == 768


def test_ast_preset_grid():
    backbone = build_model("absolute", preset="ast").backbone
    assert backbone.grid_shape == (101, 12)  # 1212 overlapping 16x16 patches
    assert backbone.position_embedding.get_weights()[0].shape == (101, 12, 768)


def test_pegs_follow_the_first_blocks():
    backbone = build_model("conditional", preset="ast-pe").backbone
    assert [peg.name for peg in backbone.pegs] == [f"peg_{i}" for i in range(5)]


@pytest.mark.parametrize("pe", PE_KINDS)
def test_any_clip_length(pe):
    """A model built for 10 s clips runs on 5 s and 30 s clips (and anything between)."""
    model = build_model(pe, **TINY)
    for frames in (992, 498, 2998, 40):
        scores = keras.ops.convert_to_numpy(model(np.random.rand(2, frames, 64), training=False))
        assert scores.shape == (2, 3)
        assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("pe", PE_KINDS)
def test_position_information_matters_except_for_none(pe):
    """Swapping two time chunks changes the output iff the model sees positions."""
    model = build_model(pe, preset="ast-pe-tiny", num_classes=3, activation=None,
                        num_frames=128, dropout=0.0, alibi_slopes="code")
    for block in model.backbone.blocks:  # unit-scale relative tables, not the small init
        bias = block.attention.position_bias
        if bias is not None and bias.weights:
            bias.set_weights([np.random.randn(*w.shape) for w in bias.get_weights()])
    features = np.random.rand(1, 128, 64).astype("float32")
    swapped = features.copy()
    swapped[:, :32], swapped[:, 64:96] = features[:, 64:96], features[:, :32]
    a, b = (keras.ops.convert_to_numpy(model(x)) for x in (features, swapped))
    difference = float(np.abs(a - b).max())
    if pe == "none":
        assert difference < 1e-5
    else:
        assert difference > 1e-4  # float noise is ~1e-6


def test_post_norm_has_no_final_norm():
    backbone = build_model("none", norm_first=False, **TINY).backbone
    assert backbone.final_norm is None


def test_unknown_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="position_encoding"):
        build_model("rotary", **TINY)
    with pytest.raises(ValueError, match="preset"):
        build_model("none", preset="ast-huge")
    with pytest.raises(TypeError, match="num_layer"):
        build_model("none", num_layer=3, **TINY)


def test_backbone_config_round_trip():
    backbone = build_model("time_alibi", alibi_slopes="code", **TINY).backbone
    restored = ASTBackbone.from_config(backbone.get_config())
    assert restored.get_config() == backbone.get_config()
    assert keras_astpe.get_preset("ast-pe")["hidden_dim"] == 768
