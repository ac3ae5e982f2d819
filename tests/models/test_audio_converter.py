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
)
from keras_astpe.normalization import NormalizationStats

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _waveform(samples=16000, batch=2):
    return (0.3 * np.random.randn(batch, samples)).astype("float32")


def test_log_mel_config_is_unchanged():
    """The paper's converter saves what it saved before the base class existed."""
    converter = LogMelAudioConverter(FrontEndConfig(), NormalizationStats(-4.5, 2.5, 7))
    config = converter.get_config()
    assert config["frontend"] == FrontEndConfig().to_dict()
    assert config["stats"] == {"low": -4.5, "high": 2.5, "num_clips": 7}
    assert not {"config", "target_frames"} & set(config)
    assert isinstance(converter, AudioConverter)
    assert converter.spec_augment_bins == 257


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
