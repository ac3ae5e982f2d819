"""AST's kaldi fbank front end: values against transformers' ASTFeatureExtractor, length, scaling.

transformers' numpy path (used when torchaudio is absent, as here) is kaldi-compatible and
computes in float64, so it stands in for `torchaudio.compliance.kaldi.fbank`. Tolerance: the
front end runs in float32, like torchaudio, so bins far below the frame's energy (near-silent
low bins after DC removal and pre-emphasis, bins between pure tones) carry float32 rounding:
on AST's normalized features the largest difference seen is 2.2e-4 (2e-3 in log units) and
the mean 6e-6 (pure tones; 1e-7 for noise). torchaudio's own float32 code path (run on
torch 2.13 from its source) differs from the same reference by as much: 1.9e-4 and 5.5e-6.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import kaldi_fbank
from keras_astpe.kaldi_fbank import KaldiFbankConfig

pytestmark = [
    pytest.mark.backend_agnostic,
    # transformers warns that AST's 128 filters include empty ones: they are (tested below).
    pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values"),
]

CONFIG = KaldiFbankConfig()
RATE = CONFIG.sample_rate
# On AST's normalized features, (x - mean) / (2 * std) with std 4.57: largest and mean |diff|.
MAX_ABS_DIFF = 5e-4
MEAN_ABS_DIFF = 1e-5


def _transformers():
    return pytest.importorskip(
        "transformers", reason="transformers (test extra) is the reference for AST's fbank")


def _extractor(**kwargs):
    transformers = _transformers()
    pytest.importorskip("torch", reason="transformers' ASTFeatureExtractor requires torch")
    return transformers.ASTFeatureExtractor(**kwargs)


def _time(num_samples):
    return np.arange(num_samples) / RATE


def _waveforms():
    """Named float32 clips in [-1, 1]: the cases AST meets, and edge cases."""
    rng = np.random.default_rng(0)
    t = _time(10 * RATE)
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 330 * t), 0.2 * rng.standard_normal(t.size)])
    clips = {
        "noise_10s": 0.3 * rng.standard_normal(10 * RATE),
        "tones_10s": (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
                      + 0.05 * np.sin(2 * np.pi * 7900 * t)),
        "silence_10s": np.zeros(10 * RATE),
        "short_0.3s": 0.2 * rng.standard_normal(4800),
        "one_frame": 0.2 * rng.standard_normal(CONFIG.frame_length),
        "long_11s_cut": 0.1 * rng.standard_normal(11 * RATE),
        "stereo_downmixed": stereo.mean(axis=0),
        "dc_offset_and_chirp": 0.3 + 0.2 * np.sin(2 * np.pi * (50 + 400 * _time(3 * RATE))
                                                    * _time(3 * RATE)),
        "very_quiet": 1e-4 * rng.standard_normal(2 * RATE),
        "full_scale_clipped": np.clip(2.0 * rng.standard_normal(RATE), -1.0, 1.0),
    }
    return {name: clip.astype(np.float32) for name, clip in clips.items()}


def _assert_close_to_reference(ours, reference, what):
    diff = np.abs(np.asarray(ours, np.float64) - np.asarray(reference, np.float64))
    assert diff.max() <= MAX_ABS_DIFF, f"{what}: max |diff| {diff.max():.2e}"
    assert diff.mean() <= MEAN_ABS_DIFF, f"{what}: mean |diff| {diff.mean():.2e}"


@pytest.mark.parametrize("name", sorted(_waveforms()))
def test_matches_transformers_ast_feature_extractor(name):
    waveform = _waveforms()[name]
    reference = _extractor()(waveform, sampling_rate=RATE, return_tensors="np")["input_values"]
    ours = kaldi_fbank.waveform_to_fbank(waveform, CONFIG).numpy()
    assert ours.shape == (1024, 128) and reference.shape == (1, 1024, 128)
    _assert_close_to_reference(ours, reference[0], name)


def test_batch_of_clips_matches_transformers_clip_by_clip():
    clips = [clip for clip in _waveforms().values() if clip.size == 10 * RATE]
    reference = _extractor()(clips, sampling_rate=RATE, return_tensors="np")["input_values"]
    ours = kaldi_fbank.waveform_to_fbank(np.stack(clips), CONFIG).numpy()
    assert ours.shape == reference.shape == (len(clips), 1024, 128)
    _assert_close_to_reference(ours, reference, "batch")


def test_other_lengths_and_statistics_match_transformers():
    """ESC-50's AST setting: 512 frames and ESC-50 statistics (a 5 s clip is cut)."""
    config = KaldiFbankConfig(target_frames=512, mean=-6.6268077, std=5.358466)
    extractor = _extractor(max_length=512, mean=config.mean, std=config.std)
    for waveform in (_waveforms()["noise_10s"][:5 * RATE], _waveforms()["short_0.3s"]):
        reference = extractor(waveform, sampling_rate=RATE, return_tensors="np")["input_values"]
        ours = kaldi_fbank.waveform_to_fbank(waveform, config).numpy()
        _assert_close_to_reference(ours, reference[0], "esc50 setting")


def test_povey_window_matches_transformers_spectrogram():
    audio_utils = _transformers().audio_utils
    config = KaldiFbankConfig(window="povey", num_mel_bins=64, lower_edge_hertz=50.0,
                              upper_edge_hertz=7000.0, preemphasis=0.5)
    mel_filters = audio_utils.mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=64, min_frequency=50.0, max_frequency=7000.0,
        sampling_rate=RATE, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    np.testing.assert_allclose(kaldi_fbank.mel_matrix(config), mel_filters, atol=1e-6)
    waveform = _waveforms()["noise_10s"][:3 * RATE]
    reference = audio_utils.spectrogram(
        waveform, audio_utils.window_function(400, "povey", periodic=False), frame_length=400,
        hop_length=160, fft_length=512, power=2.0, center=False, preemphasis=0.5,
        mel_filters=mel_filters, log_mel="log", mel_floor=kaldi_fbank.LOG_FLOOR,
        remove_dc_offset=True).T
    ours = kaldi_fbank.log_fbank(waveform, config).numpy()
    assert ours.shape == reference.shape == (config.num_frames(3 * RATE), 64)
    # log-fbank units, before AST's division by 2 * std.
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    assert np.abs(ours - reference).mean() < 2e-5


def test_mel_matrix_is_kaldis_filterbank():
    matrix = kaldi_fbank.mel_matrix(CONFIG)
    assert matrix.shape == (257, 128) and matrix.dtype == np.float32
    assert not matrix[-1].any()  # the Nyquist bin has no weight, as in kaldi
    assert matrix.min() == 0.0 and matrix.max() <= 1.0
    # 128 bins from 20 Hz over 31.25 Hz FFT bins: the lowest filters hold no FFT bin at all,
    # so their fbank value is the floor log(eps) for every input (as in AST).
    mel = lambda hertz: 1127.0 * np.log1p(hertz / 700.0)
    edges = np.linspace(mel(20.0), mel(8000.0), 130)
    bin_mels = mel(np.arange(256) * RATE / 512)
    holds_a_bin = [((bin_mels > left) & (bin_mels < right)).any()
                   for left, right in zip(edges[:-2], edges[2:], strict=True)]
    np.testing.assert_array_equal(matrix.max(axis=0) > 0, holds_a_bin)
    assert not all(holds_a_bin)
    transformers = _transformers()
    reference = transformers.audio_utils.mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=128, min_frequency=20, max_frequency=8000,
        sampling_rate=RATE, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    np.testing.assert_allclose(matrix, reference, atol=1e-6)


def _numpy_fbank(waveform, config):
    """Independent float64 reference of kaldi's steps: strided frames, DC removal,
    pre-emphasis, symmetric Hann (^0.85 for povey), zero-padded rfft, power, filterbank, log."""
    waveform = np.asarray(waveform, np.float64)
    num_frames = config.num_frames(waveform.size)
    index = (np.arange(config.frame_length)[None, :]
             + config.frame_step * np.arange(num_frames)[:, None])
    frames = waveform[index]
    frames -= frames.mean(axis=-1, keepdims=True)
    frames -= config.preemphasis * np.concatenate([frames[:, :1], frames[:, :-1]], axis=-1)
    window = np.hanning(config.frame_length) ** (0.85 if config.window == "povey" else 1.0)
    power = np.abs(np.fft.rfft(frames * window, n=config.fft_length, axis=-1)) ** 2
    mel = power @ kaldi_fbank.mel_matrix(config).astype(np.float64)
    return np.log(np.maximum(mel, kaldi_fbank.LOG_FLOOR))


@pytest.mark.parametrize("config", [
    CONFIG, KaldiFbankConfig(window="povey", num_mel_bins=64, lower_edge_hertz=125.0,
                             upper_edge_hertz=7500.0, preemphasis=0.0),
], ids=["ast", "povey_64_bins_no_preemphasis"])
def test_log_fbank_matches_a_numpy_float64_reference(config):
    for name in ("noise_10s", "tones_10s", "dc_offset_and_chirp", "one_frame"):
        waveform = _waveforms()[name]
        ours = kaldi_fbank.log_fbank(waveform, config).numpy()
        reference = _numpy_fbank(waveform, config)
        assert ours.shape == reference.shape == (config.num_frames(waveform.size),
                                                 config.num_mel_bins)
        # Log units, before AST's division by 2 * std (float32 rounding, see the top).
        diff = np.abs(ours - reference)
        assert diff.max() < 5e-3 and diff.mean() < 2e-4, (name, diff.max(), diff.mean())


def test_tone_peaks_in_the_filter_centred_nearest_its_frequency():
    """Above ~400 Hz, where the filters are wider than the 31.25 Hz FFT bins."""
    mel = lambda hertz: 1127.0 * np.log1p(hertz / 700.0)
    centres = np.linspace(mel(20.0), mel(8000.0), 130)[1:-1]
    for hertz in (440.0, 1234.0, 5000.0, 7000.0):
        sine = (0.5 * np.sin(2 * np.pi * hertz * _time(RATE))).astype(np.float32)
        features = kaldi_fbank.log_fbank(sine, CONFIG).numpy()
        assert (features.argmax(axis=-1) == np.abs(centres - mel(hertz)).argmin()).all()


def test_int16_pcm_gives_the_features_of_its_float_waveform_exactly():
    pcm = (_waveforms()["noise_10s"] * 2**15).clip(-2**15, 2**15 - 1).astype(np.int16)
    from_int = kaldi_fbank.waveform_to_fbank(pcm, CONFIG).numpy()
    from_float = kaldi_fbank.waveform_to_fbank(pcm.astype(np.float32) / 2**15, CONFIG).numpy()
    np.testing.assert_array_equal(from_int, from_float)
    with pytest.raises(ValueError, match="int16"):
        kaldi_fbank.log_fbank(pcm.astype(np.int32), CONFIG)
    with pytest.raises(ValueError, match="samples axis"):
        kaldi_fbank.log_fbank(np.float32(0.0), CONFIG)


def test_clip_mean_removal_of_ast_is_implied_by_the_per_frame_dc_removal():
    """AST subtracts the waveform mean first; a constant offset changes nothing here."""
    waveform = _waveforms()["noise_10s"][:2 * RATE]
    plain = kaldi_fbank.log_fbank(waveform, CONFIG).numpy()
    shifted = kaldi_fbank.log_fbank(waveform + np.float32(0.25), CONFIG).numpy()
    assert np.abs(plain - shifted).mean() < 1e-5 and np.abs(plain - shifted).max() < 2e-3


def test_pad_cut_and_normalization():
    padded_value = -CONFIG.mean / (2 * CONFIG.std)
    assert padded_value == pytest.approx(0.46704, abs=1e-5)
    assert CONFIG.num_frames(10 * RATE) == 998 and CONFIG.num_samples(1024) == 164080
    noise = _waveforms()["noise_10s"]
    raw = kaldi_fbank.log_fbank(noise, CONFIG).numpy()
    features = kaldi_fbank.waveform_to_fbank(noise, CONFIG).numpy()
    np.testing.assert_allclose(features[:998], (raw - CONFIG.mean) / (2 * CONFIG.std),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(features[998:], np.float32(padded_value))
    long = np.tile(noise, 2)
    cut = kaldi_fbank.waveform_to_fbank(long, CONFIG).numpy()
    np.testing.assert_allclose(cut, kaldi_fbank.normalize(
        kaldi_fbank.log_fbank(long, CONFIG)[:1024], CONFIG), rtol=1e-6, atol=1e-6)
    # Shorter than one frame: no fbank frame (torchaudio refuses it), all padding.
    tiny = kaldi_fbank.waveform_to_fbank(noise[:399], CONFIG).numpy()
    assert tiny.shape == (1024, 128)
    np.testing.assert_array_equal(tiny, np.float32(padded_value))
    free = KaldiFbankConfig(target_frames=None)
    assert kaldi_fbank.waveform_to_fbank(noise[:RATE], free).shape == (98, 128)
    assert kaldi_fbank.waveform_to_fbank(noise[:399], free).shape == (0, 128)


def test_batched_any_rank_graph_and_tf_data_equal_clip_by_clip():
    clips = np.stack([_waveforms()["noise_10s"][:3 * RATE], _waveforms()["tones_10s"][:3 * RATE]])
    single = np.stack([kaldi_fbank.waveform_to_fbank(clip, CONFIG).numpy() for clip in clips])
    np.testing.assert_allclose(kaldi_fbank.waveform_to_fbank(clips, CONFIG), single,
                               rtol=1e-5, atol=1e-5)
    nested = kaldi_fbank.waveform_to_fbank(clips[None], CONFIG).numpy()
    np.testing.assert_allclose(nested[0], single, rtol=1e-5, atol=1e-5)
    graph = tf.function(lambda x: kaldi_fbank.waveform_to_fbank(x, CONFIG),
                        input_signature=[tf.TensorSpec([None, None], tf.float32)])
    assert graph.get_concrete_function().structured_outputs.shape.as_list() == [None, 1024, 128]
    np.testing.assert_allclose(graph(clips), single, rtol=1e-5, atol=1e-5)
    ragged = [clips[0], clips[1][:RATE]]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(ragged), output_signature=tf.TensorSpec([None], tf.float32))
    mapped = list(dataset.map(lambda x: kaldi_fbank.waveform_to_fbank(x, CONFIG)))
    assert mapped[0].shape == mapped[1].shape == (1024, 128)
    np.testing.assert_allclose(mapped[0], single[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        mapped[1], kaldi_fbank.waveform_to_fbank(ragged[1], CONFIG), rtol=1e-5, atol=1e-5)


def test_config_validation_and_dict_round_trip():
    assert KaldiFbankConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert CONFIG.fft_length == 512 and CONFIG.high_frequency == 8000.0
    assert KaldiFbankConfig(sample_rate=22050).high_frequency == 11025.0
    custom = KaldiFbankConfig(window="povey", target_frames=None, upper_edge_hertz=7600.0)
    assert KaldiFbankConfig.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="unknown KaldiFbankConfig keys"):
        KaldiFbankConfig.from_dict({**CONFIG.to_dict(), "dither": 1.0})
    with pytest.raises(ValueError, match="window"):
        KaldiFbankConfig(window="hamming")
    with pytest.raises(ValueError, match="upper_edge_hertz"):
        KaldiFbankConfig(upper_edge_hertz=9000.0)
    with pytest.raises(ValueError, match="target_frames"):
        KaldiFbankConfig(target_frames=0)
    with pytest.raises(ValueError, match="std"):
        KaldiFbankConfig(std=0.0)
    with pytest.raises(ValueError, match="preemphasis"):
        KaldiFbankConfig(preemphasis=1.5)
    with pytest.raises(ValueError, match="num_mel_bins"):
        KaldiFbankConfig(num_mel_bins=0)
