"""The front ends a model carries: the paper's log-mel and AST's kaldi fbank."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import build_model, kaldi_fbank
from keras_astpe.frontend import FrontEndConfig, waveform_to_features
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import (
    AudioConverter,
    KaldiFbankAudioConverter,
    LogMelAudioConverter,
    regroup_8x32,
)
from keras_astpe.normalization import NormalizationStats

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _waveform(samples=16000, batch=2):
    return (0.3 * np.random.randn(batch, samples)).astype("float32")


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_log_mel_config_round_trip_and_older_configs():
    """The options save with the model; a config saved without them (older models) loads
    with ReLU, no padding and plain features, the behaviour it was saved with."""
    converter = LogMelAudioConverter(FrontEndConfig(), NormalizationStats(-4.5, 2.5, 7))
    config = converter.get_config()
    assert config["frontend"] == FrontEndConfig().to_dict()
    assert config["stats"] == {"low": -4.5, "high": 2.5, "num_clips": 7, "relu": True}
    assert (config["min_samples"], config["patch_layout"]) == (None, "plain")
    assert not {"config", "target_frames"} & set(config)
    assert isinstance(converter, AudioConverter)
    assert converter.spec_augment_bins == 257
    older = {key: value for key, value in config.items()
             if key not in ("min_samples", "patch_layout")}
    older["stats"] = {"low": -4.5, "high": 2.5, "num_clips": 7}
    restored = LogMelAudioConverter.from_config(older)
    assert (restored.stats.relu, restored.min_samples, restored.patch_layout) == (
        True, None, "plain")
    waveform = _waveform()
    np.testing.assert_array_equal(restored.features(waveform).numpy(),
                                  converter.features(waveform).numpy())
    options = LogMelAudioConverter(FrontEndConfig(log_offset=1e-4),
                                   NormalizationStats(-0.935, 1.949, relu=False),
                                   min_samples=20000, patch_layout="8x32")
    again = LogMelAudioConverter.from_config(options.get_config())
    assert (again.stats.relu, again.min_samples, again.patch_layout) == (False, 20000, "8x32")
    assert again.frontend.log_offset == 1e-4


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_log_mel_without_relu_keeps_negative_values():
    """(x + 0.935) / 2.884 without ReLU (the peg2/peg3 runs): the ReLU'd features are its
    positive part."""
    frontend = FrontEndConfig(log_offset=1e-4)
    waveform = _waveform()
    plain = LogMelAudioConverter(frontend, NormalizationStats(-0.935, 1.949, relu=False))
    clipped = LogMelAudioConverter(frontend, NormalizationStats(-0.935, 1.949))
    features = plain.features(waveform).numpy()
    assert features.min() < -0.2
    np.testing.assert_array_equal(np.maximum(features, 0), clipped.features(waveform).numpy())


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_short_clips_are_zero_padded_to_min_samples():
    converter = LogMelAudioConverter(min_samples=16000)
    short = _waveform(samples=6000)
    padded = np.pad(short, ((0, 0), (0, 10000)))
    np.testing.assert_array_equal(converter.features(short).numpy(),
                                  LogMelAudioConverter().features(padded).numpy())
    assert converter.num_frames(6000) == converter.num_frames(16000) == 98
    assert converter.num_frames(32000) == 198 and converter.num_samples(98) == 15920
    assert converter.compute_output_shape((2, 6000)) == (2, 98, 64)
    pcm = (short * 32767).astype("int16")
    np.testing.assert_array_equal(converter.features(pcm[0]).numpy(),
                                  LogMelAudioConverter().features(
                                      np.pad(pcm[0], (0, 10000))).numpy())
    graph = tf.function(converter.features,
                        input_signature=[tf.TensorSpec((None, None), tf.float32)])
    np.testing.assert_allclose(graph(short).numpy(), converter.features(short).numpy(),
                               atol=1e-6)
    long = _waveform(samples=20000)
    np.testing.assert_array_equal(converter.features(long).numpy(),
                                  LogMelAudioConverter().features(long).numpy())
    for bad in (0, -5, True):
        with pytest.raises(ValueError, match="min_samples must be a positive number"):
            LogMelAudioConverter(min_samples=bad)


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_8x32_layout_puts_each_8x32_block_in_a_32x8_patch():
    """Patch k of the regrouped features' 32 x 8 grid, flattened frame by frame, is block k
    (8 frames x 32 bins, time-major) of the features, flattened frame by frame."""
    features = np.random.rand(2, 100, 64).astype("float32")  # 3 chunks of 32 + 4 frames
    regrouped = regroup_8x32(features).numpy()
    blocks = (features[:, :96].reshape(2, 12, 8, 2, 32).transpose(0, 1, 3, 2, 4)
              .reshape(2, 24, 256))
    patches = (regrouped[:, :96].reshape(2, 3, 32, 8, 8).transpose(0, 1, 3, 2, 4)
               .reshape(2, 24, 256))
    np.testing.assert_array_equal(patches, blocks)
    np.testing.assert_array_equal(regrouped[:, 96:], features[:, 96:])
    np.testing.assert_array_equal(regroup_8x32(features[0]).numpy(), regrouped[0])
    converter = LogMelAudioConverter(patch_layout="8x32")
    waveform = _waveform(samples=16000)
    np.testing.assert_array_equal(
        converter.features(waveform).numpy(),
        regroup_8x32(LogMelAudioConverter().features(waveform)).numpy())
    with pytest.raises(ValueError, match="needs a multiple of 32 mel bins, got 40"):
        LogMelAudioConverter(FrontEndConfig(num_mel_bins=40), patch_layout="8x32")
    with pytest.raises(ValueError, match="Unknown patch_layout 'rotated'"):
        LogMelAudioConverter(patch_layout="rotated")


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_log_mel_features_are_the_pipeline_function():
    stats = NormalizationStats(-4.5, 2.5)
    converter = LogMelAudioConverter(FrontEndConfig(), stats)
    waveform = _waveform()
    keep_time = np.random.rand(2, 98) > 0.2
    keep_freq = np.random.rand(2, 257) > 0.2
    masks = (keep_time.astype("float32"), keep_freq.astype("float32"))
    np.testing.assert_array_equal(converter.features(waveform).numpy(),
                                  waveform_to_features(waveform, FrontEndConfig(), stats).numpy())
    np.testing.assert_array_equal(
        converter.features(waveform, masks=masks).numpy(),
        waveform_to_features(waveform, FrontEndConfig(), stats, masks=masks).numpy())


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_kaldi_features_are_ast_front_end():
    converter = KaldiFbankAudioConverter()
    assert converter.get_config()["config"] == KaldiFbankConfig().to_dict()
    waveform = _waveform(samples=5 * 16000)
    features = keras.ops.convert_to_numpy(converter(waveform))
    assert features.shape == (2, 1024, 128)
    np.testing.assert_array_equal(
        features, kaldi_fbank.waveform_to_fbank(waveform, KaldiFbankConfig()).numpy())
    # Frames past the clip (498 frames in 5 s) are zero fbank values, normalized.
    np.testing.assert_allclose(features[:, 498:], 4.2677393 / (2 * 4.5689974), rtol=1e-6)


def test_kaldi_sizes():
    converter = KaldiFbankAudioConverter()
    assert (converter.sample_rate, converter.num_mel_bins) == (16000, 128)
    assert converter.num_frames(160000) == 1024  # padded or cut to the target length
    assert converter.num_samples(16) == 2800  # one 16-frame patch of the clip itself
    assert converter.spec_augment_bins == 128
    own_length = KaldiFbankAudioConverter(KaldiFbankConfig(target_frames=None))
    assert own_length.num_frames(160000) == 998
    assert own_length.compute_output_shape((None, 160000)) == (None, 998, 128)
    assert converter.compute_output_shape((3, None)) == (3, None, 128)


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_kaldi_masks_zero_fbank_values_before_normalizing():
    """As AST's dataloader: SpecAugment on the padded fbank, masked value 0, then (x - m)/2s."""
    config = KaldiFbankConfig(target_frames=120, mean=-3.0, std=2.0)
    converter = KaldiFbankAudioConverter(config)
    waveform = _waveform(samples=16000)
    keep_time = (np.random.rand(2, 120) > 0.3).astype("float32")
    keep_freq = (np.random.rand(2, 128) > 0.3).astype("float32")
    fbank = kaldi_fbank.pad_or_cut(kaldi_fbank.log_fbank(waveform, config), 120).numpy()
    expected = (fbank * keep_time[:, :, None] * keep_freq[:, None, :] + 3.0) / 4.0
    np.testing.assert_allclose(
        converter.features(waveform, masks=(keep_time, keep_freq)).numpy(), expected,
        rtol=1e-6, atol=1e-6)


# The TensorFlow values (numpy in, `.numpy()` out); every backend's: test_frontend_reference.
@pytest.mark.backend_agnostic
def test_kaldi_converter_in_a_graph_of_any_length():
    converter = KaldiFbankAudioConverter(KaldiFbankConfig(target_frames=64))
    function = tf.function(converter.features,
                           input_signature=[tf.TensorSpec((None, None), tf.float32)])
    waveform = _waveform(samples=8000)
    np.testing.assert_allclose(function(waveform).numpy(), converter.features(waveform).numpy(),
                               atol=1e-6)


def test_classifier_saves_and_loads_its_kaldi_converter(tmp_path):
    config = KaldiFbankConfig(target_frames=128, mean=-5.0, std=3.0)
    model = build_model("absolute", preset="ast", num_classes=2, num_frames=128,
                        num_layers=1, hidden_dim=24, num_heads=2, intermediate_dim=32,
                        audio_converter=KaldiFbankAudioConverter(config), class_names=["a", "b"])
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored.audio_converter, KaldiFbankAudioConverter)
    assert restored.audio_converter.config == config
    waveform = _waveform(samples=16000, batch=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(restored.audio_converter(waveform))),
        keras.ops.convert_to_numpy(model(model.audio_converter(waveform))), atol=1e-6)


def test_mel_bins_must_match_the_backbone():
    with pytest.raises(ValueError, match="makes 64 mel bins, the backbone takes 128"):
        build_model("absolute", preset="ast", num_classes=2, num_layers=1, hidden_dim=24,
                    num_heads=2, intermediate_dim=32,
                    audio_converter=KaldiFbankAudioConverter(KaldiFbankConfig(num_mel_bins=64)))


def test_model_saved_without_the_new_options_keeps_its_scores(tmp_path):
    """A .keras file whose converter config lacks `relu`, `min_samples` and `patch_layout`
    (as models were saved before they existed) loads with the ReLU, unpadded and plain, and
    scores as the model it was saved from."""
    import json
    import zipfile

    model = build_model("absolute", preset="ast-pe-tiny", num_classes=3, num_frames=128,
                        audio_converter=LogMelAudioConverter(stats=NormalizationStats(-5, 2)))
    model.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as source:
        files = {name: source.read(name) for name in source.namelist()}
    config = json.loads(files["config.json"])
    converter = config["config"]["audio_converter"]["config"]
    del converter["min_samples"], converter["patch_layout"], converter["stats"]["relu"]
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "older.keras", "w") as target:
        for name, content in files.items():
            target.writestr(name, content)
    restored = keras.saving.load_model(tmp_path / "older.keras", safe_mode=True)
    converter = restored.audio_converter
    assert (converter.stats.relu, converter.min_samples, converter.patch_layout) == (
        True, None, "plain")
    waveform = _waveform(samples=12000, batch=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(restored.audio_converter(waveform))),
        keras.ops.convert_to_numpy(model(model.audio_converter(waveform))), atol=1e-6)
