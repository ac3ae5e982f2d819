import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe import PE_KINDS, ASTBackbone, build_model
from keras_astpe.models.presets import get_front_end, get_head

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


def test_ast_preset_is_the_original_ast():
    """1212 overlapping 16x16 patches, [CLS] + distillation token, AST's head: the
    parameters of transformers' ASTForAudioClassification (86,594,063 with 527 classes)
    less the two prefix-token positions, which are folded into the tokens."""
    backbone = ASTBackbone(position_encoding="absolute", **keras_astpe.get_preset("ast"))
    assert backbone.grid_shape == (101, 12)
    assert backbone.position_embedding.get_weights()[0].shape == (101, 12, 768)
    assert backbone.num_prefix_tokens == 2 and backbone.distillation_token is not None
    assert backbone.embedding_norm is None and backbone.final_norm is not None
    assert backbone.final_norm.epsilon == 1e-6 and backbone.dropout == 0.0
    classifier = keras_astpe.ASTClassifier(backbone, 527, **get_head("ast"))
    assert classifier.head_norm.epsilon == 1e-5
    assert classifier.count_params() == 86_594_063 - 2 * 768
    assert get_front_end("ast") == "kaldi_fbank" and get_front_end("ast-pe") == "log_mel"
    assert get_head("ast-pe") == {}


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
    assert backbone.get_config()["final_norm"] is False


def _states(backbone, features):
    return keras.ops.convert_to_numpy(backbone(features))


def test_norm_options_remove_exactly_their_layernorm():
    """`embedding_norm=False` (AST) and `final_norm=False` (the paper's code) give the
    states of the default model run with that LayerNorm bypassed."""
    features = np.random.rand(2, 64, 64).astype("float32")
    default = build_model("absolute", **TINY).backbone
    for layer in ("embedding_norm", "final_norm"):
        without = build_model("absolute", **{layer: False}, **TINY).backbone
        assert getattr(without, layer) is None
        without.set_weights([w for v, w in zip(default.weights, default.get_weights(),
                                               strict=True)
                             if not v.path.startswith(f"{layer}/")])
        norm = getattr(default, layer)
        norm.call = lambda x: x
        try:
            np.testing.assert_allclose(_states(without, features), _states(default, features),
                                       atol=1e-5)
        finally:
            del norm.call


def test_feedforward_bias_option_reaches_every_block():
    backbone = build_model("none", use_feedforward_bias=False, **TINY).backbone
    assert all(block.feedforward_intermediate.bias is None for block in backbone.blocks)
    assert backbone.count_params() == build_model("none", **TINY).backbone.count_params() - (
        2 * (128 + 64))


@pytest.mark.parametrize("pe", PE_KINDS)
def test_distillation_token_follows_cls(pe):
    """[CLS], then the distillation token, then the patches; every kind treats the second
    prefix token as [CLS]: an identical token in both places gives identical states."""
    model = build_model(pe, distillation_token=True, dropout=0.0, **TINY)
    backbone = model.backbone
    assert backbone.num_prefix_tokens == 2
    features = np.random.rand(2, 96, 64).astype("float32")
    states = _states(backbone, features)
    assert states.shape == (2, 2 + 3 * 8, 64)
    token = keras.ops.convert_to_numpy(backbone.class_token.token)
    backbone.distillation_token.token.assign(token)
    states = _states(backbone, features)
    np.testing.assert_allclose(states[:, 0], states[:, 1], atol=1e-5)


@pytest.mark.parametrize("pe", PE_KINDS)
@pytest.mark.parametrize("options", [{"num_layers": 3}, {"distillation_token": True}])
def test_prefix_only_gives_the_prefix_states(pe, options):
    """`prefix_only=True` gives the prefix tokens' states of the whole computation: the
    last block computing only their rows, or (a PEG after the last block: the tiny
    preset's conditional kinds) the states sliced; the classifier scores from them."""
    model = build_model(pe, dropout=0.0, **options, **TINY)
    backbone = model.backbone
    features = np.random.rand(2, 96, 64).astype("float32")
    prefix = keras.ops.convert_to_numpy(backbone(features, prefix_only=True))
    assert prefix.shape == (2, backbone.num_prefix_tokens, 64)
    states = _states(backbone, features)
    np.testing.assert_allclose(prefix, states[:, :backbone.num_prefix_tokens], atol=2e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(features)),
                               keras.ops.convert_to_numpy(model.classify(model.pool(states))),
                               atol=1e-5)


def test_config_from_before_the_options_keeps_the_model():
    """Configs saved before `use_feedforward_bias`, `distillation_token`, `embedding_norm`
    and `final_norm` existed build the same model (a final norm exactly with pre-norm)."""
    for norm_first in (True, False):
        config = build_model("conditional", norm_first=norm_first, **TINY).backbone.get_config()
        assert config["final_norm"] is norm_first
        old = {k: v for k, v in config.items() if k not in (
            "use_feedforward_bias", "distillation_token", "embedding_norm", "final_norm")}
        assert ASTBackbone.from_config(old).get_config() == config


def test_backbone_config_round_trip_of_the_ast_options():
    backbone = build_model("time_alibi", distillation_token=True, embedding_norm=False,
                           final_norm=False, use_feedforward_bias=False, **TINY).backbone
    restored = ASTBackbone.from_config(backbone.get_config())
    assert restored.get_config() == backbone.get_config()
    features = np.random.rand(1, 64, 64).astype("float32")
    restored.set_weights(backbone.get_weights())
    np.testing.assert_allclose(_states(restored, features), _states(backbone, features),
                               atol=1e-6)


def test_unknown_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="position_encoding"):
        build_model("rotary", **TINY)
    with pytest.raises(ValueError, match="preset"):
        build_model("none", preset="ast-huge")
    with pytest.raises(TypeError, match="num_layer"):
        build_model("none", num_layer=3, **TINY)
    with pytest.raises(ValueError, match="Unknown alibi_block_cls 'frequency_heads'"):
        build_model("alibi_2d", alibi_block_cls="frequency_heads", **TINY)


@pytest.mark.parametrize("name", ["features", "x", "position_encoding", "kwargs"])
def test_build_model_rejects_names_that_are_not_backbone_arguments(name):
    """Local variables of `ASTBackbone.__init__` (and the `pe` it sets itself) are refused."""
    assert name in ASTBackbone.__init__.__code__.co_varnames
    with pytest.raises(TypeError, match=f"Unknown model arguments \\['{name}'\\]"):
        build_model("none", **{name: 1}, **TINY)


def test_alibi_cls_blocking_default_and_options():
    """Default as the original code: in alibi_2d only the time heads block [CLS]."""
    for option, blocked in [(None, [1, 1, 0, 0]), ("all_heads", [1, 1, 1, 1]),
                            ("none", [0, 0, 0, 0])]:
        extra = {} if option is None else {"alibi_block_cls": option}
        backbone = build_model("alibi_2d", **TINY, **extra).backbone
        bias = backbone.blocks[0].attention.position_bias
        assert bias.block_patches_to_cls == (option or "time_heads")
        r = keras.ops.convert_to_numpy(bias(np.zeros((1, 17, 4, 16), "float32")))[0]
        np.testing.assert_array_equal(r[:, 1:, 0].min(axis=1), -1e9 * np.array(blocked))
        np.testing.assert_array_equal(r[:, 0], 0.0)  # [CLS] attends to every patch
    time_alibi = build_model("time_alibi", **TINY).backbone.blocks[0].attention.position_bias
    r = keras.ops.convert_to_numpy(time_alibi(np.zeros((1, 17, 4, 16), "float32")))[0]
    np.testing.assert_array_equal(r[:, 1:, 0], -1e9)


FEW_FRAMES = (r"Too few frames: the AST needs at least 32 frames \(one patch of 32 frames x 8 "
              r"mel bins\), got {}")


@pytest.mark.parametrize("pe", PE_KINDS)
def test_fewer_frames_than_one_patch_is_a_clear_error(pe):
    """Eagerly, in `predict` and, on TensorFlow and JAX, compiled with XLA."""
    model = build_model(pe, num_layers=1, **TINY)
    compiled = [False] + ([True] if keras.backend.backend() != "torch" else [])
    for frames in (10, 0):
        features = np.zeros((2, frames, 64), "float32")
        with pytest.raises(ValueError, match=FEW_FRAMES.format(frames)):
            model(features)
        for jit_compile in compiled:
            # A fresh model each time: on JAX, Keras leaves the variables of a model whose
            # `predict` raised emptied.
            predictor = build_model(pe, num_layers=1, **TINY)
            predictor.compile(jit_compile=jit_compile)
            with pytest.raises(ValueError, match=FEW_FRAMES.format(frames)):
                predictor.predict(features, verbose=0)
    scores = keras.ops.convert_to_numpy(model(np.zeros((2, 32, 64), "float32")))
    assert scores.shape == (2, 3) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("pe", PE_KINDS)
def test_tensorflow_graph_for_any_number_of_frames(pe):
    """A graph traced for an unknown frame count gives the eager states, and checks the
    frame count when it runs."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow graphs have frame counts unknown while tracing")
    import tensorflow as tf

    backbone = build_model(pe, **TINY).backbone
    graph = tf.function(backbone, input_signature=[tf.TensorSpec((None, None, 64))])
    for frames in (64, 96):
        features = np.random.rand(2, frames, 64).astype("float32")
        np.testing.assert_allclose(graph(features).numpy(), backbone(features).numpy(),
                                   atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Too few frames: .*32 frames.*got\] \[10\]"):
        graph(np.zeros((2, 10, 64), "float32"))


def test_training_clips_shorter_than_one_patch_are_a_clear_error():
    with pytest.raises(ValueError, match=FEW_FRAMES.format(20)):
        build_model("absolute", num_frames=20, **TINY)
    with pytest.raises(ValueError, match="Too few mel bins: .* at least 8 mel bins"):
        build_model("none", num_mel_bins=4, **TINY)


@pytest.mark.parametrize("pe, options", [
    ("time_alibi", {"alibi_slopes": "code"}),
    ("alibi_2d", {"alibi_block_cls": "all_heads"}),
    ("learned_relative", {}),
])
def test_backbone_config_round_trip(pe, options):
    backbone = build_model(pe, **options, **TINY).backbone
    restored = ASTBackbone.from_config(backbone.get_config())
    assert restored.get_config() == backbone.get_config()
    assert keras_astpe.get_preset("ast-pe")["hidden_dim"] == 768
