"""load_audio on real files written with soundfile: formats, rates, downmix, failures."""

import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from keras_astpe.data.audio_io import AudioDecodeError, load_audio, resample

pytestmark = pytest.mark.backend_agnostic

RATE = 16000


def _sine(freq, seconds, sr, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(
        np.float32)


def _tone_amplitude(waveform, freq, sr=RATE):
    """Amplitude of the `freq` component (Hann-windowed DFT at that bin, edges dropped)."""
    x = waveform[sr // 10: -sr // 10].astype(np.float64)
    window = np.hanning(len(x))
    t = np.arange(len(x)) / sr
    return 2 * abs(np.sum(x * window * np.exp(-2j * np.pi * freq * t))) / np.sum(window)


def _peak_frequency(waveform, sr=RATE):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.fft.rfftfreq(len(waveform), 1 / sr)[np.argmax(spectrum)]


def _reason(path):
    with pytest.raises(AudioDecodeError) as caught:
        load_audio(path)
    assert caught.value.path == os.fspath(path)
    assert caught.value.message
    return caught.value.reason


@pytest.mark.parametrize("extension, file_format, subtype, tolerance", [
    ("wav", "WAV", "PCM_16", 0.002),
    ("flac", "FLAC", "PCM_24", 0.002),
    ("ogg", "OGG", "VORBIS", 0.06),
    ("mp3", "MP3", "MPEG_LAYER_III", 0.06),
])
@pytest.mark.parametrize("sr", [16000, 22050, 44100, 48000])
def test_formats_and_rates_keep_frequency_and_amplitude(tmp_path, extension, file_format,
                                                        subtype, tolerance, sr):
    path = tmp_path / f"tone.{extension}"
    sf.write(path, _sine(1000.0, 2.0, sr), sr, format=file_format, subtype=subtype)
    audio = load_audio(path)
    assert audio.waveform.dtype == np.float32 and audio.waveform.ndim == 1
    assert audio.original_sample_rate == sr
    assert audio.duration_seconds == pytest.approx(2.0, abs=0.06)
    assert len(audio.waveform) == pytest.approx(round(audio.duration_seconds * RATE), abs=1)
    assert _peak_frequency(audio.waveform) == pytest.approx(1000.0, abs=2.0)
    assert _tone_amplitude(audio.waveform, 1000.0) == pytest.approx(0.5, abs=0.5 * tolerance)


def test_stereo_is_averaged_to_mono(tmp_path):
    sr = 44100
    left, right = _sine(440.0, 1.0, sr, 0.6), _sine(440.0, 1.0, sr, 0.2)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="PCM_24")
    audio = load_audio(path)
    assert audio.waveform.ndim == 1 and len(audio.waveform) == RATE
    assert _tone_amplitude(audio.waveform, 440.0) == pytest.approx(0.4, abs=0.002)


def test_resampling_is_anti_aliased(tmp_path):
    """A 10 kHz tone cannot exist at 16 kHz: it must vanish, not alias to 6 kHz."""
    sr = 44100
    path = tmp_path / "high.wav"
    sf.write(path, _sine(10000.0, 2.0, sr) + _sine(4000.0, 2.0, sr, 0.25), sr, subtype="FLOAT")
    waveform = load_audio(path).waveform
    assert _tone_amplitude(waveform, 4000.0) == pytest.approx(0.25, rel=0.01)
    alias = _tone_amplitude(waveform, 16000.0 - 10000.0)
    assert 20 * np.log10(alias / 0.5) < -45.0
    # Plain decimation by picking samples would alias the tone to full strength.
    naive = _sine(10000.0, 2.0, sr)[np.round(np.arange(2 * RATE) * sr / RATE).astype(int)]
    assert _tone_amplitude(naive, 6000.0) > 0.3


def test_resample_identity_and_ratio():
    x = _sine(300.0, 1.0, 8000)
    assert np.array_equal(resample(x, 8000, 8000), x)
    assert len(resample(x, 8000, 16000)) == 16000


def test_missing_empty_and_corrupt_files(tmp_path):
    assert _reason(tmp_path / "nope.wav") == "not_found"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert _reason(tmp_path / "empty.wav") == "empty"
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    assert _reason(tmp_path / "noise.wav") == "unreadable"
    sf.write(tmp_path / "zero_frames.wav", np.zeros((0,), np.float32), RATE)
    assert _reason(tmp_path / "zero_frames.wav") == "empty"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = _sine(440.0, 0.5, RATE)
    x[1234] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    assert _reason(path) == "non_finite"


@pytest.mark.parametrize("extension, subtype", [
    ("wav", "PCM_16"), ("flac", "PCM_16"), ("mp3", "MPEG_LAYER_III")])
@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_truncated_files(tmp_path, extension, subtype, kept):
    full = tmp_path / f"full.{extension}"
    sf.write(full, _sine(440.0, 3.0, 44100) + 0.01 * np.random.default_rng(0).standard_normal(
        3 * 44100).astype(np.float32), 44100, subtype=subtype)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{extension}"
    cut.write_bytes(data[:int(len(data) * kept)])
    assert load_audio(full).duration_seconds == pytest.approx(3.0, abs=0.01)
    assert _reason(cut) == "truncated"


def test_m4a_without_ffmpeg_is_unsupported(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    monkeypatch.setenv("PATH", str(tmp_path / "no_programs_here"))
    with pytest.raises(AudioDecodeError) as caught:
        load_audio(path)
    assert caught.value.reason == "unsupported_format"
    assert "ffmpeg" in caught.value.message


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not on PATH")
def test_m4a_through_ffmpeg(tmp_path):
    wav, m4a = tmp_path / "tone.wav", tmp_path / "tone.m4a"
    sf.write(wav, np.stack([_sine(1000.0, 2.0, 44100)] * 2, axis=1), 44100)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac",
                    "-b:a", "128k", str(m4a)], check=True)
    audio = load_audio(m4a)
    assert audio.original_sample_rate == 44100
    assert audio.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert _peak_frequency(audio.waveform) == pytest.approx(1000.0, abs=2.0)
    assert _tone_amplitude(audio.waveform, 1000.0) == pytest.approx(0.5, rel=0.05)
    (tmp_path / "junk.m4a").write_bytes(np.random.default_rng(1).bytes(3000))
    assert _reason(tmp_path / "junk.m4a") == "unreadable"
    (tmp_path / "cut.m4a").write_bytes(m4a.read_bytes()[:m4a.stat().st_size // 2])
    assert _reason(tmp_path / "cut.m4a") == "truncated"


def test_error_pickles_and_rejects_unknown_reasons(tmp_path):
    error = AudioDecodeError(tmp_path / "a.wav", "truncated", "cut short")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, copy.message) == (error.path, "truncated", "cut short")
    assert "truncated" in str(copy) and "cut short" in str(copy)
    with pytest.raises(ValueError):
        AudioDecodeError("a.wav", "bad luck", "?")
