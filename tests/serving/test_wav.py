"""The in-graph WAV decoder against soundfile (what keras_astpe.data.audio_io reads with), its
errors, and its bounded walk over the chunks before the audio."""

import io
import re
import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.serving.wav import MAX_CHUNKS, decode_wav, read_header

pytestmark = pytest.mark.backend_agnostic


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decode(contents):
    return decode_wav(contents, tf.constant(2))


def _wav(samples, rate, subtype, file_format="WAV"):
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format=file_format)
    return buffer.getvalue()


def _samples(frames, channels, seed=0):
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (frames, channels)).astype(
        np.float32)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("file_format", ["WAV", "WAVEX"])
def test_decodes_as_soundfile_does(subtype, channels, file_format):
    contents = _wav(_samples(1001, channels), 22050, subtype, file_format)
    samples, rate = _decode(contents)
    expected, expected_rate = sf.read(io.BytesIO(contents), dtype="float32", always_2d=True)
    assert int(rate) == expected_rate == 22050
    np.testing.assert_array_equal(samples.numpy(), expected)


def _chunk(chunk_id, payload):
    padding = b"\0" if len(payload) % 2 else b""
    return chunk_id + struct.pack("<I", len(payload)) + payload + padding


def _riff(*chunks):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt(tag=1, channels=1, rate=16000, bits=16):
    block = channels * bits // 8
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block, block,
                                       bits))


def test_walks_other_chunks_and_their_padding():
    pcm = np.array([1, -2, 300, -32768, 32767], "<i2")
    contents = _riff(_chunk(b"LIST", b"odd"), _fmt(), _chunk(b"junk", b""),
                     _chunk(b"data", pcm.tobytes()))
    samples, rate = _decode(contents)
    assert int(rate) == 16000
    np.testing.assert_array_equal(samples.numpy()[:, 0], pcm / 32768.0)


def test_streaming_writers_data_size_means_to_the_end():
    pcm = np.arange(10, dtype="<i2")
    for size in (0, 0xFFFFFFFF):
        contents = _riff(_fmt()) + b"data" + struct.pack("<I", size) + pcm.tobytes()
        np.testing.assert_array_equal(_decode(contents)[0].numpy()[:, 0], pcm / 32768.0)


def _error(contents):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _decode(contents)
    return error.value.message


@pytest.mark.parametrize("contents, message", [
    (b"", r"wav_bytes\[2\]: not a WAV file \(0 bytes that do not start with a RIFF/WAVE "
          r"header\); expected the bytes of a \.wav file"),
    (b"ID3\x03 an mp3 file", r"wav_bytes\[2\]: not a WAV file \(16 bytes"),
    (_riff(_fmt()), r"wav_bytes\[2\]: the WAV file has no data chunk"),
    (_riff(_chunk(b"data", b"\0\0")), r"wav_bytes\[2\]: the WAV file has no valid fmt chunk"),
    (_riff(_fmt(bits=24), _chunk(b"data", b"\0" * 6)),
     r"wav_bytes\[2\]: unsupported WAV encoding \(format tag 1, 24 bits per sample\); "
     r"expected 16-bit PCM or 32-bit float"),
    (_riff(_fmt(tag=6, bits=8), _chunk(b"data", b"\0" * 6)),
     r"unsupported WAV encoding \(format tag 6, 8 bits"),
    (_riff(_fmt(channels=0), _chunk(b"data", b"\0" * 6)), "declares 0 channels"),
    (_riff(_fmt(), _chunk(b"data", b"")), r"wav_bytes\[2\]: the WAV file holds no audio"),
    (_riff(_fmt(tag=3, bits=32), _chunk(b"data", np.array([0.5, np.nan], "<f4").tobytes())),
     "holds NaN or Inf samples"),
])
def test_bad_files_are_clear_errors(contents, message):
    assert re.search(message, _error(contents))


def test_truncated_file_says_how_much_is_missing():
    contents = _wav(_samples(1000, 1), 16000, "PCM_16")
    assert "truncated WAV file: its data chunk announces 2000 bytes, 1990 are present" in (
        _error(contents[:-10]))


def test_the_walk_reads_at_most_max_chunks():
    """`data` as chunk MAX_CHUNKS is found; one chunk later, or after the 500,000 empty
    chunks of a flood, the file is refused with what was expected."""
    pcm = np.array([5, -7, 9], "<i2")
    junk = _chunk(b"junk", b"")

    def file(empty_chunks):
        return _riff(_fmt(), junk * empty_chunks, _chunk(b"data", pcm.tobytes()))

    np.testing.assert_array_equal(_decode(file(MAX_CHUNKS - 2))[0].numpy()[:, 0],
                                  pcm / 32768.0)
    message = (rf"wav_bytes\[2\]: no data chunk among the first {MAX_CHUNKS} chunks of the "
               rf"WAV file; expected its audio after at most {MAX_CHUNKS - 1} other chunks")
    assert re.search(message, _error(file(MAX_CHUNKS - 1)))
    assert re.search(message, _error(file(500_000)))


def test_the_header_is_read_without_the_samples():
    """`read_header` gives the length and rate of a file whose samples would be refused."""
    samples = np.array([0.5, np.nan, 0.25, 0.0], "<f4")
    contents = _riff(_fmt(tag=3, channels=2, rate=44100, bits=32),
                     _chunk(b"data", samples.tobytes()))
    header = tf.function(lambda c: read_header(c, tf.constant(0)))(tf.constant(contents))
    assert [int(v) for v in header[1:4]] == [2, 2, 44100]  # frames, channels, rate
    assert bool(header.is_float32)
    assert "holds NaN or Inf samples" in _error(contents)
