"""The study's runs whose checkpoints have the paper's shapes but not its model: the
peg2/peg3 front end, ALiBi before the [CLS] correction, dienen's early 8 x 32 patches, and
the original's zero padding of short clips. Each converts to the original's scores from
what the file, its config or a flag says, and what none says is listed as assumed.

Fixtures and reference forward: `dienen_reference` (configs laid out as the study's
architecture YAMLs, at small sizes).
"""

import joblib
import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe.conversion.dienen import dienen_conversion
from tests.conversion import dienen_reference as reference


def _waveform(samples=reference.SAMPLES):
    return (0.3 * np.random.default_rng(1).standard_normal((2, samples))).astype("float32")


def _scores(model, waveform):
    return keras.ops.convert_to_numpy(model(model.audio_converter(waveform)))


def _files(tmp_path, kind, front_end="paper", seed=0, **checkpoint_options):
    """`(layers, .weights, .dnn with its config, architecture YAML)` of one model."""
    layers = reference.checkpoint(kind, np.random.default_rng(seed), **checkpoint_options)
    joblib.dump(layers, tmp_path / "model.weights", compress=3)
    reference.write_dnn(tmp_path / "model.dnn", layers, reference.architecture(kind, front_end))
    (tmp_path / "model.yaml").write_text(reference.architecture_yaml(kind, front_end))
    return layers, tmp_path / "model.weights", tmp_path / "model.dnn", tmp_path / "model.yaml"


@pytest.mark.parametrize("kind", ["conditional", "conditional_absolute"])
@pytest.mark.parametrize("source", ["dnn", "yaml"])
def test_peg2_front_end_is_read_from_the_config(kind, source, tmp_path):
    """peg2/peg3: log(x + 0.0001), (x + 0.935) / 2.884, no ReLU; the paper's front end on
    the same weights scores far off."""
    layers, weights, dnn, yaml = _files(tmp_path, kind, "peg2")
    conversion = (dienen_conversion(dnn) if source == "dnn"
                  else dienen_conversion(weights, config=yaml))
    waveform = _waveform()
    expected = reference.forward(layers, waveform, "peg2")
    np.testing.assert_allclose(_scores(conversion.model, waveform), expected, atol=1e-4)
    converter = conversion.model.audio_converter
    assert converter.frontend.log_offset == 1e-4
    assert (converter.stats.low, converter.stats.relu) == (-0.935, False)
    assert converter.stats.high == pytest.approx(-0.935 + 2.884)
    assert "log(mel + 0.0001), (x + 0.935) / 2.884, no ReLU" in conversion.summary
    assert not any("front end" in line for line in conversion.assumed)

    guessed = dienen_conversion(weights, num_heads=reference.HEADS,
                                min_samples=reference.SAMPLES)
    assert any("the paper's front end" in line and "--config" in line
               for line in guessed.assumed)
    assert np.abs(_scores(guessed.model, waveform) - expected).max() > 1e-2


def test_peg2_model_keeps_its_front_end_when_saved(tmp_path):
    _, _, dnn, _ = _files(tmp_path, "conditional", "peg2")
    model = dienen_conversion(dnn).model
    model.save(tmp_path / "peg2.keras")
    restored = keras.saving.load_model(tmp_path / "peg2.keras", safe_mode=True)
    assert restored.audio_converter.stats.relu is False
    assert restored.audio_converter.frontend.log_offset == 1e-4
    short = _waveform(reference.SAMPLES // 3)
    np.testing.assert_allclose(_scores(restored, short), _scores(model, short), atol=1e-6)


@pytest.mark.parametrize("corrected", [False, True])
def test_alibi_2d_cls_blocking_is_read_from_the_stored_bias(corrected, tmp_path):
    """Runs before dienen's [CLS] correction (2021-09-30) block nothing; later ones block
    [CLS] in the time heads."""
    layers, weights, _, _ = _files(tmp_path, "alibi_2d", cls_correction=corrected)
    conversion = dienen_conversion(weights)
    backbone = conversion.model.backbone
    assert (backbone.alibi_slopes, backbone.alibi_block_cls) == (
        "code", "time_heads" if corrected else "none")
    waveform = _waveform()
    np.testing.assert_allclose(_scores(conversion.model, waveform),
                               reference.forward(layers, waveform), atol=1e-4)


def test_a_bias_of_no_slope_rule_is_refused(tmp_path):
    layers = reference.checkpoint("alibi_2d", np.random.default_rng(0))
    for name, (arrays, _) in layers.items():
        if "TransformerBlock" in name:
            arrays[-1] = arrays[-1] * 1.5
    joblib.dump(layers, tmp_path / "odd.weights")
    with pytest.raises(ValueError, match="odd.weights: the stored ALiBi bias is not that of "
                                         "either slope rule"):
        dienen_conversion(tmp_path / "odd.weights")


@pytest.mark.parametrize("kind", ["absolute", "conditional", "alibi_2d"])
def test_early_8x32_patches_from_the_flag(kind, tmp_path):
    """dienen before 2021-09-07 cut 8 frames x 32 bins for the same `patch_size: [32, 8]`:
    same shapes, other scores. Neither file tells; `patches="8x32"` converts them, and the
    converter says it read the config's patch_size as the later dienen does."""
    layers, weights, dnn, _ = _files(tmp_path, kind)
    waveform = _waveform()
    expected = reference.forward(layers, waveform, early_patches=True)
    for conversion in (dienen_conversion(dnn, patches="8x32"),
                       dienen_conversion(weights, patches="8x32", num_heads=reference.HEADS,
                                         min_samples=reference.SAMPLES)):
        np.testing.assert_allclose(_scores(conversion.model, waveform), expected, atol=1e-4)
        assert conversion.model.audio_converter.patch_layout == "8x32"
        assert "patches 8 x 32" in conversion.summary
        assert not any("patches" in line for line in conversion.assumed)
    default = dienen_conversion(dnn)
    assert any("patch_size [32, 8], as dienen has read it since 2021-09-07" in line
               and "--patches=8x32" in line for line in default.assumed)
    assert np.abs(_scores(default.model, waveform) - expected).max() > 1e-3


def test_8x32_patches_stated_by_the_config(tmp_path):
    """A config whose GetPatches says [8, 32] (8 frames x 32 bins as dienen has read it
    since 2021-09-07) with the PEGs' grid of 4 x 8: converted as stated; the reading of the
    config is the one thing assumed."""
    layers = reference.checkpoint("conditional", np.random.default_rng(4))
    architecture = reference.architecture("conditional")
    for entry in architecture:
        if "GetPatches" in entry:
            entry["GetPatches"]["patch_size"] = [8, 32]
    reference.write_dnn(tmp_path / "early.dnn", layers, architecture)
    conversion = dienen_conversion(tmp_path / "early.dnn")
    assert len(conversion.assumed) == 1
    assert "patch_size [8, 32]" in conversion.assumed[0]
    assert "--patches=32x8" in conversion.assumed[0]
    waveform = _waveform()
    np.testing.assert_allclose(_scores(conversion.model, waveform),
                               reference.forward(layers, waveform, early_patches=True),
                               atol=1e-4)


def test_early_patches_model_saves_and_loads(tmp_path):
    _, _, dnn, _ = _files(tmp_path, "conditional_absolute")
    model = dienen_conversion(dnn, patches="8x32").model
    model.save(tmp_path / "early.keras")
    restored = keras.saving.load_model(tmp_path / "early.keras", safe_mode=True)
    assert restored.audio_converter.patch_layout == "8x32"
    waveform = _waveform()
    np.testing.assert_allclose(_scores(restored, waveform), _scores(model, waveform),
                               atol=1e-6)


def test_short_clips_are_zero_padded_as_the_original_evaluation(tmp_path):
    """A converted model pads clips shorter than its input with zeros (as the original's
    evaluation); `min_samples=0` scores them at their own length, which differs."""
    layers, weights, _, _ = _files(tmp_path, "absolute")
    short = _waveform(reference.SAMPLES * 3 // 5)
    padded = np.pad(short, ((0, 0), (0, reference.SAMPLES - short.shape[1])))
    model = dienen_conversion(weights, num_heads=reference.HEADS).model
    assert model.audio_converter.min_samples == reference.SAMPLES
    assert model.audio_converter.num_frames(short.shape[1]) == 128
    np.testing.assert_allclose(_scores(model, short), reference.forward(layers, padded),
                               atol=1e-4)
    tagged = dict(keras_astpe.tag(model, short[0], sample_rate=16000))  # as a user scores
    np.testing.assert_allclose([tagged[str(i)] for i in range(reference.CLASSES)],
                               reference.forward(layers, padded)[0], atol=1e-4)
    own_length = dienen_conversion(weights, num_heads=reference.HEADS, min_samples=0).model
    assert own_length.audio_converter.min_samples is None
    assert np.abs(_scores(own_length, short) - _scores(model, short)).max() > 1e-3
    longer = _waveform(reference.SAMPLES + 800)  # not padded, not cut
    np.testing.assert_allclose(_scores(model, longer), _scores(own_length, longer), atol=1e-6)


def test_what_the_file_does_not_tell_is_listed(tmp_path):
    _, weights, dnn, yaml = _files(tmp_path, "conditional")
    assumed = dienen_conversion(weights).assumed
    assert len(assumed) == 4
    for words in ("32 x 8 patches", "an input of 158,960 samples", "attention heads",
                  "the paper's front end"):
        assert any(words in line for line in assumed), (words, assumed)
    for conversion in (dienen_conversion(dnn), dienen_conversion(weights, config=yaml)):
        assert len(conversion.assumed) == 1 and "GetPatches" in conversion.assumed[0]
        assert conversion.model.backbone.num_heads == reference.HEADS


def test_configs_the_converter_cannot_reproduce_are_refused(tmp_path):
    _, weights, _, _ = _files(tmp_path, "absolute")
    architecture = reference.architecture("absolute")
    architecture.insert(5, {"MinMaxScaler": {"axis": 1}})
    reference.write_dnn(tmp_path / "scaler.dnn", reference.checkpoint(
        "absolute", np.random.default_rng(0)), architecture)
    with pytest.raises(ValueError, match=r"scaler.dnn \(its config\): MinMaxScaler layer: "
                                         "not a model the converter reproduces"):
        dienen_conversion(tmp_path / "scaler.dnn")
    (tmp_path / "alibi.yaml").write_text(reference.architecture_yaml("alibi_2d"))
    with pytest.raises(ValueError, match="alibi.yaml: the positional encoding is alibi_2d, "
                                         "the weights of .*model.weights have absolute"):
        dienen_conversion(weights, config=tmp_path / "alibi.yaml")
    (tmp_path / "broken.yaml").write_text("Model: [unclosed")
    with pytest.raises(ValueError, match="broken.yaml: not a YAML file"):
        dienen_conversion(weights, config=tmp_path / "broken.yaml")
    with pytest.raises(ValueError, match="num_heads=2, but .*model.yaml has 4 heads"):
        (tmp_path / "model.yaml").write_text(reference.architecture_yaml("absolute"))
        dienen_conversion(weights, config=tmp_path / "model.yaml", num_heads=2)
