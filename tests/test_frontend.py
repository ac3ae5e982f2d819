"""Front end: frame arithmetic, STFT/mel/log values against numpy, scaling, no train/serve skew."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import frontend
from keras_astpe.data import pipeline, schema
from keras_astpe.framework_ops import ops_for
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models import LogMelAudioConverter
from keras_astpe.normalization import NormalizationStats
from keras_astpe.spec_augment import SpecAugmentConfig, spec_augment, spec_augment_masks

pytestmark = pytest.mark.backend_agnostic

CONFIG = FrontEndConfig()
STATS = NormalizationStats()
RATE = CONFIG.sample_rate


def _noise(num_samples, seed=0, amplitude=0.3):
    return (amplitude * np.random.default_rng(seed).standard_normal(num_samples)).astype(
        np.float32)


def _numpy_log_mel(waveform, config):
    """Independent reference: strided frames, periodic Hann, numpy rfft, the tf mel matrix."""
    waveform = np.asarray(waveform, np.float64)
    num_frames = 1 + (waveform.size - config.frame_length) // config.frame_step
    index = (np.arange(config.frame_length)[None, :]
             + config.frame_step * np.arange(num_frames)[:, None])
    n = np.arange(config.frame_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.frame_length)
    magnitude = np.abs(np.fft.rfft(waveform[index] * window, n=config.fft_length, axis=-1))
    mel = magnitude @ _mel_matrix(config).astype(np.float64)
    return magnitude, np.log(mel + config.log_offset)


def test_frame_count_arithmetic():
    assert CONFIG.num_frames(158960) == 992 == 31 * 32
    assert CONFIG.num_samples(992) == 158960
    for frames in (1, 2, 98, 992):
        samples = CONFIG.num_samples(frames)
        assert CONFIG.num_frames(samples) == frames
        assert CONFIG.num_frames(samples - 1) == frames - 1
    assert CONFIG.num_frames(399) == 0
    assert CONFIG.num_spectrogram_bins == 257
    magnitude = frontend.magnitude_spectrogram(np.zeros(158960, np.float32), CONFIG)
    assert magnitude.shape == (992, 257) and magnitude.dtype == tf.float32


def test_config_validation_and_dict_round_trip():
    assert FrontEndConfig.from_dict(CONFIG.to_dict()) == CONFIG
    custom = FrontEndConfig(num_mel_bins=128, lower_edge_hertz=0.0, upper_edge_hertz=8000.0)
    assert FrontEndConfig.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="unknown FrontEndConfig keys"):
        FrontEndConfig.from_dict({**CONFIG.to_dict(), "n_fft": 512})
    with pytest.raises(ValueError, match="frame_length"):
        FrontEndConfig(frame_length=600)
    with pytest.raises(ValueError, match="upper_edge_hertz"):
        FrontEndConfig(upper_edge_hertz=9000.0)
    with pytest.raises(ValueError, match="num_mel_bins"):
        FrontEndConfig(num_mel_bins=0)
    with pytest.raises(ValueError, match="log_offset"):
        FrontEndConfig(log_offset=0.0)


def test_pure_sine_peaks_at_its_bin_with_the_expected_magnitude():
    bin_index, amplitude = 40, 0.5  # 40 * 16000 / 512 = 1250 Hz, exactly on a bin
    t = np.arange(RATE) / RATE
    sine = (amplitude * np.sin(2 * np.pi * bin_index * RATE / CONFIG.fft_length * t))
    magnitude = frontend.magnitude_spectrogram(sine.astype(np.float32), CONFIG).numpy()
    assert (magnitude.argmax(axis=-1) == bin_index).all()
    # A bin-centred sine of amplitude A gives A * sum(window) / 2 = A * 100 (periodic Hann).
    np.testing.assert_allclose(magnitude[:, bin_index], amplitude * 100.0, rtol=1e-3)
    # Main lobe: 2 x 512 / 400 = 2.56 bins each side; Hann side lobes are below -31 dB.
    far = np.delete(magnitude, range(bin_index - 2, bin_index + 3), axis=-1)
    assert far.max() < 0.03 * amplitude * 100.0
    very_far = np.delete(magnitude, range(bin_index - 8, bin_index + 9), axis=-1)
    assert very_far.max() < 1e-3 * amplitude * 100.0


def test_magnitude_and_log_mel_match_a_numpy_reference():
    waveform = _noise(RATE // 2)
    magnitude_ref, log_mel_ref = _numpy_log_mel(waveform, CONFIG)
    magnitude = frontend.magnitude_spectrogram(waveform, CONFIG).numpy()
    np.testing.assert_allclose(magnitude, magnitude_ref, rtol=1e-4, atol=1e-4)
    log_mel = frontend.log_mel(tf.constant(magnitude_ref, tf.float32), CONFIG).numpy()
    np.testing.assert_allclose(log_mel, log_mel_ref, atol=2e-5)
    end_to_end = frontend.log_mel(frontend.magnitude_spectrogram(waveform, CONFIG), CONFIG)
    np.testing.assert_allclose(end_to_end.numpy(), log_mel_ref, atol=1e-4)
    # Silence gives exactly log(log_offset).
    silent = frontend.log_mel(frontend.magnitude_spectrogram(np.zeros(800), CONFIG), CONFIG)
    np.testing.assert_allclose(silent.numpy(), np.log(CONFIG.log_offset), rtol=1e-6)


def _mel_matrix(config):
    return keras.ops.convert_to_numpy(frontend.mel_matrix(config, ops_for()))


def test_mel_matrix_is_the_tf_filterbank_with_the_configured_edges():
    matrix = _mel_matrix(CONFIG)
    reference = tf.signal.linear_to_mel_weight_matrix(64, 257, RATE, 125.0, 7500.0).numpy()
    if keras.backend.backend() == "tensorflow":
        np.testing.assert_array_equal(matrix, reference)  # the same float32 ops
    np.testing.assert_allclose(matrix, reference, atol=1e-6)
    assert matrix.shape == (257, 64)
    hz_per_bin = RATE / CONFIG.fft_length
    used = np.nonzero(matrix.any(axis=1))[0]
    assert used.min() * hz_per_bin >= CONFIG.lower_edge_hertz
    assert used.max() * hz_per_bin <= CONFIG.upper_edge_hertz
    assert matrix.min() >= 0.0 and matrix.max() <= 1.0


def test_scale_is_the_original_linear_map_then_relu_unless_disabled():
    stats = NormalizationStats(low=-5.61, high=2.07)
    values = tf.constant([-5.61, 2.07, (-5.61 + 2.07) / 2, -7.0, 5.91])
    np.testing.assert_allclose(frontend.scale(values, stats).numpy(),
                               [0.0, 1.0, 0.5, 0.0, (5.91 + 5.61) / 7.68], rtol=1e-5,
                               atol=1e-6)
    # Without the ReLU, as the peg2/peg3 runs: (x + 0.935) / 2.884.
    affine = NormalizationStats(low=-0.935, high=-0.935 + 2.884, relu=False)
    np.testing.assert_allclose(frontend.scale(values, affine).numpy(),
                               (values.numpy() + 0.935) / 2.884, rtol=1e-6, atol=1e-6)


def test_batched_equals_unbatched():
    batch = np.stack([_noise(RATE // 2, seed) for seed in range(3)])
    batched = frontend.waveform_to_features(batch, CONFIG, STATS).numpy()
    assert batched.shape == (3, CONFIG.num_frames(RATE // 2), 64)
    for i, waveform in enumerate(batch):
        single = frontend.waveform_to_features(waveform, CONFIG, STATS).numpy()
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batched", [False, True])
def test_fused_spec_augment_equals_masking_the_magnitude(batched):
    """The front end masks mel-matrix rows and output frames; that must equal masking the
    linear magnitude before the mel filters (the paper's definition)."""
    config = SpecAugmentConfig(probability=1.0)
    waveform = np.stack([_noise(RATE, seed) for seed in range(4)]) if batched else _noise(RATE)
    seed = tf.constant([7, 11])
    masks = spec_augment_masks(seed, CONFIG.num_frames(RATE), CONFIG.num_spectrogram_bins,
                               config, batch_shape=waveform.shape[:-1])
    features = frontend.waveform_to_features(waveform, CONFIG, STATS, masks=masks).numpy()
    masked = spec_augment(frontend.magnitude_spectrogram(waveform, CONFIG), seed, config)
    reference = frontend.scale(frontend.log_mel(masked, CONFIG), STATS).numpy()
    np.testing.assert_allclose(features, reference, rtol=1e-6, atol=1e-6)
    assert (features == 0).any()  # the masks did something
    unaugmented = frontend.waveform_to_features(waveform, CONFIG, STATS).numpy()
    assert not np.allclose(features, unaugmented)


def test_int16_pcm_gives_the_features_of_its_float_waveform_exactly():
    """PCM is scaled by 2**-15 inside the window: bit-identical to scaling the samples."""
    pcm = np.round(_noise(RATE, seed=3) * 32767.0).astype(np.int16)
    pcm[:400] = [-32768, 32767] * 200  # full scale
    from_pcm = frontend.waveform_to_features(pcm, CONFIG, STATS).numpy()
    from_float = frontend.waveform_to_features(pcm / np.float32(32768.0), CONFIG, STATS)
    np.testing.assert_array_equal(from_pcm, from_float.numpy())
    np.testing.assert_array_equal(frontend.magnitude_spectrogram(pcm, CONFIG).numpy(),
                                  frontend.magnitude_spectrogram(pcm / 32768.0, CONFIG).numpy())
    with pytest.raises(ValueError, match="int16 PCM"):
        frontend.magnitude_spectrogram(pcm.astype(np.int32), CONFIG)


def test_cross_check_with_tensorflow_io():
    """tfio's pure-Python spectrogram and melscale: the reference of the original code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import tensorflow_io as tfio
            spectrogram, melscale = tfio.audio.spectrogram, tfio.audio.melscale
        except Exception as error:  # its compiled ops may not load with this TensorFlow
            pytest.skip(f"tensorflow_io unavailable: {error}")
    waveform = _noise(RATE)
    ours = frontend.magnitude_spectrogram(waveform, CONFIG).numpy()
    theirs = spectrogram(waveform, nfft=512, window=400, stride=160).numpy()
    # tfio pads the end (pad_end=True) and so has extra frames; the shared ones are equal.
    np.testing.assert_allclose(ours, theirs[:ours.shape[0]], rtol=1e-5, atol=1e-5)
    mel = melscale(theirs[:ours.shape[0]], rate=RATE, mels=64, fmin=125.0, fmax=7500.0)
    np.testing.assert_allclose(
        frontend.log_mel(ours, CONFIG).numpy(), np.log(mel.numpy() + 1e-3), atol=1e-5)


def _write(path, waveforms):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, waveform in enumerate(waveforms):
            writer.write(schema.encode_example(
                waveform, f"clip{i}", [i], original_sample_rate=RATE,
                duration=waveform.size / RATE))


def _as_stored(waveform):
    """What a client holding the same 16-bit PCM sends to the serving function."""
    pcm = np.clip(np.round(waveform * 32767.0), -32768, 32767)  # as schema.encode_example
    return (pcm / 32768.0).astype(np.float32)


def test_no_train_serve_skew(tmp_path):
    """Evaluation features from TFRecords == `waveform_to_features` on the raw waveform."""
    clip_samples = 158960
    long_clip = _noise(160000, seed=1)  # a 10 s AudioSet clip: evaluation takes its start
    short_clip = _noise(RATE, seed=2)  # 1 s: zero-padded at the end
    _write(tmp_path / "eval.tfrecord", [long_clip, short_clip])
    dataset = pipeline.make_dataset(str(tmp_path / "eval.tfrecord"), num_classes=2,
                                    batch_size=2, training=False, clip_samples=clip_samples,
                                    converter=LogMelAudioConverter())
    (features, _), = list(dataset)
    served_long = frontend.waveform_to_features(_as_stored(long_clip)[:clip_samples], CONFIG,
                                                STATS)
    padded = np.pad(_as_stored(short_clip), (0, clip_samples - RATE))
    served_short = frontend.waveform_to_features(padded, CONFIG, STATS)
    assert features.shape == (2, 992, 64)
    # Exactly equal: the pipeline's int16 path scales inside the window, by a power of two.
    np.testing.assert_array_equal(features[0], served_long)
    np.testing.assert_array_equal(features[1], served_short)
