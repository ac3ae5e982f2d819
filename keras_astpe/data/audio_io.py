"""Decodes one audio file into a mono float32 waveform at the model's sample rate.

`load_audio` reads WAV/FLAC/OGG/MP3 (and the other formats of libsndfile) with soundfile
and falls back to an `ffmpeg` subprocess for what soundfile cannot open (M4A/AAC, WebM,
...). Stereo is averaged to mono; other rates are resampled with
`scipy.signal.resample_poly` at the exact rational ratio, whose Kaiser-windowed low-pass
FIR removes content above the new Nyquist frequency instead of aliasing it.

Every failure raises `AudioDecodeError` with a machine-readable `reason` (one of
`REASONS`), so converters can report skipped files by cause instead of losing them
silently. Truncated files are detected: libsndfile failing mid-stream, fewer frames than
the header declares (for WAV the RIFF `data` chunk is checked directly, since libsndfile
shrinks its frame count to the bytes present without complaint), or ffmpeg reporting a
partial file.

This module imports only numpy, scipy and soundfile (no TensorFlow) so that converter
worker processes start fast.
"""

import dataclasses
import math
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import scipy.signal
import soundfile as sf

SAMPLE_RATE = 16000

REASONS = {
    "not_found": "the file does not exist",
    "empty": "the file holds no audio",
    "unreadable": "the file is corrupt or in an encoding the decoder cannot read",
    "truncated": "the file ends before the audio its header announces",
    "non_finite": "the decoded audio contains NaN or Inf",
    "unsupported_format": "no available decoder handles this format (install ffmpeg)",
}

# MP3 frame counts from a Xing/LAME header can legitimately differ from the decoded
# length by the encoder delay and padding: allow two MPEG frames of slack.
_MP3_FRAME_SLACK = 2 * 1152
# A file this large whose header reports zero frames was cut before its index/last page.
_EMPTY_HEADER_MAX_BYTES = 4096
_READ_BLOCK = 1 << 16
_FFMPEG_TIMEOUT_S = 600
# ffmpeg messages of a cut file ("moov atom not found": an MP4/M4A cut before its index).
_FFMPEG_TRUNCATION_HINTS = ("partial file", "truncat", "end of file", "moov atom not found")
# The extensions of the audio files the converters and `recipes/predict.py` pick up.
AUDIO_EXTENSIONS = frozenset(
    ("wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "mp4", "webm", "aif",
     "aiff"))
# Extensions libsndfile reads natively: when it fails on one of these, the file itself is bad.
_SOUNDFILE_EXTENSIONS = frozenset(
    "." + ext for ext in ("wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff",
                          "aifc", "au", "snd", "caf", "w64", "rf64"))


class AudioDecodeError(ValueError):
    """A file that could not be turned into a waveform; `reason` is a key of `REASONS`."""

    def __init__(self, path, reason, message):
        if reason not in REASONS:
            raise ValueError(f"unknown decode failure reason {reason!r}")
        self.path = os.fspath(path)
        self.reason = reason
        self.message = message
        super().__init__(f"{self.path}: {message} [{reason}]")

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.message)


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    """`waveform` is mono float32 at the requested rate; the other fields describe the source."""

    waveform: np.ndarray
    original_sample_rate: int
    duration_seconds: float


def is_audio_file(name):
    """Whether `name` has one of the `AUDIO_EXTENSIONS`."""
    return name.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS if "." in name else False


def load_audio(path, target_sample_rate=SAMPLE_RATE):
    """Decodes `path` to mono float32 at `target_sample_rate`; raises `AudioDecodeError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioDecodeError(path, "not_found", "no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise AudioDecodeError(path, "empty", "the file is 0 bytes long")

    try:
        sound_file = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as error:
        samples, sample_rate = _decode_with_ffmpeg(path, soundfile_error=str(error))
    else:
        with sound_file:
            samples, sample_rate = _decode_with_soundfile(path, sound_file, size)

    if samples.shape[0] == 0:
        raise AudioDecodeError(path, "empty", "the file decodes to 0 audio frames")
    if not np.all(np.isfinite(samples)):
        bad = int(np.sum(~np.isfinite(samples)))
        raise AudioDecodeError(path, "non_finite",
                               f"{bad} decoded sample(s) are NaN or Inf")
    duration = samples.shape[0] / sample_rate
    waveform = samples.mean(axis=1, dtype=np.float32)
    return DecodedAudio(resample(waveform, sample_rate, target_sample_rate),
                        int(sample_rate), float(duration))


def resample(waveform, from_rate, to_rate):
    """Polyphase resampling at the exact ratio to_rate/from_rate, anti-aliased."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if from_rate == to_rate:
        return waveform
    divisor = math.gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // divisor, int(from_rate) // divisor
    return scipy.signal.resample_poly(waveform, up, down).astype(np.float32, copy=False)


def _decode_with_soundfile(path, sound_file, size):
    """Reads every frame as (frames, channels) float32 and checks it against the header."""
    declared = sound_file.frames
    sample_rate = sound_file.samplerate
    blocks = []
    decoded = 0
    while True:
        try:
            block = sound_file.read(_READ_BLOCK, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as error:
            raise AudioDecodeError(
                path, "truncated",
                f"decoding failed after {decoded / sample_rate:.2f} s of "
                f"{declared / sample_rate:.2f} s announced by the header: {error}") from None
        if block.shape[0] == 0:
            break
        blocks.append(block)
        decoded += block.shape[0]

    if decoded == 0 and declared == 0 and size > _EMPTY_HEADER_MAX_BYTES:
        raise AudioDecodeError(
            path, "truncated",
            f"the header announces no audio although the file holds {size} bytes")
    if sound_file.format in ("WAV", "WAVEX"):
        declared = _wav_declared_frames(path, size, default=declared)
    slack = _MP3_FRAME_SLACK if sound_file.format == "MP3" else 0
    if decoded < declared - slack:
        raise AudioDecodeError(
            path, "truncated",
            f"decoded {decoded} frames ({decoded / sample_rate:.2f} s) but the header "
            f"announces {declared} ({declared / sample_rate:.2f} s)")
    if not blocks:
        return np.zeros((0, max(sound_file.channels, 1)), np.float32), sample_rate
    return np.concatenate(blocks), sample_rate


def _wav_declared_frames(path, size, default):
    """Frames announced by the RIFF `data` chunk, or `default` when it does not say.

    Streaming writers leave the size at 0 or 0xFFFFFFFF; those files cannot be checked.
    """
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return default
        block_align = None
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"fmt ":
                fmt = f.read(16)
                if len(fmt) >= 14:
                    block_align = struct.unpack("<H", fmt[12:14])[0]
            elif chunk_id == b"data":
                if not block_align or chunk_size in (0, 0xFFFFFFFF):
                    return default
                return chunk_size // block_align
            offset += 8 + chunk_size + (chunk_size & 1)
    return default


def _decode_with_ffmpeg(path, soundfile_error):
    """Decodes with ffmpeg to a temporary float WAV at the native rate and channels.

    Resampling and downmixing stay in `load_audio` so that every format gets the same
    resampler.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        extension = os.path.splitext(path)[1].lower()
        if extension in _SOUNDFILE_EXTENSIONS:
            raise AudioDecodeError(path, "unreadable", f"soundfile: {soundfile_error}")
        raise AudioDecodeError(
            path, "unsupported_format",
            f"soundfile cannot read {extension or 'this'} files ({soundfile_error}) and "
            "ffmpeg is not on PATH: install ffmpeg (e.g. `apt-get install ffmpeg`) to decode "
            "M4A/AAC and other formats")
    with tempfile.TemporaryDirectory(prefix="audio_io_") as tmp:
        decoded_path = os.path.join(tmp, "decoded.wav")
        command = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-i", path,
                   "-map", "0:a:0", "-vn", "-c:a", "pcm_f32le", "-f", "wav", decoded_path]
        try:
            result = subprocess.run(command, capture_output=True, text=True,
                                    timeout=_FFMPEG_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise AudioDecodeError(
                path, "unreadable", f"ffmpeg did not finish in {_FFMPEG_TIMEOUT_S} s") from None
        stderr = " | ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
        if result.returncode != 0 or stderr:
            truncated = any(hint in stderr.lower() for hint in _FFMPEG_TRUNCATION_HINTS)
            reason = "truncated" if truncated else "unreadable"
            raise AudioDecodeError(
                path, reason,
                f"ffmpeg exit {result.returncode}: {stderr or 'no message'} "
                f"(soundfile: {soundfile_error})")
        try:
            samples, sample_rate = sf.read(decoded_path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as error:
            raise AudioDecodeError(path, "unreadable",
                                   f"ffmpeg output unreadable: {error}") from None
    return samples, sample_rate
