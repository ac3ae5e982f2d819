"""WAV files decoded inside a TensorFlow graph, with core ops only (no tensorflow-io).

`tf.audio.decode_wav` reads 16-bit PCM only, so the RIFF container is parsed here with
`tf.strings.substr` and `tf.io.decode_raw`: the chunks are walked (up to `MAX_CHUNKS - 1`
chunks such as `LIST` may precede `data`, so that a flood of empty chunks costs no more
than a normal file), the `fmt ` chunk gives the encoding (16-bit PCM or 32-bit IEEE
float, plain or WAVE_FORMAT_EXTENSIBLE), the channel count and the sample rate, and the
samples are scaled as libsndfile (and so `keras_astpe.data.audio_io`) does: int16 / 32768,
float as stored. A file that is not such a WAV is an InvalidArgument error that names the
input and says what was expected, raised when the graph runs. `read_header` reads where
the audio is, its length and rate without touching the samples (so a request can be
checked against its limits first), `read_samples` the samples.
"""

import collections

from keras_astpe._startup import tf

# WAVE format tags; WAVE_FORMAT_EXTENSIBLE carries the real one in its sub-format GUID.
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_HEADER_BYTES = 12  # "RIFF" <size> "WAVE"
_FMT_BYTES = 40  # the longest fmt chunk read: WAVE_FORMAT_EXTENSIBLE
_STREAMING_SIZES = (0, 0xFFFFFFFF)  # data sizes a streaming writer leaves: "to the end"
# Chunks read before giving up on finding `data`. Writers put a handful of chunks (fmt,
# fact, LIST, bext, iXML, cue, JUNK padding) before the audio.
MAX_CHUNKS = 64


def _bytes(contents, position, length):
    """`length` bytes from `position` as int64 values, zeros past the end of `contents`."""
    position = tf.minimum(position, tf.cast(tf.strings.length(contents), tf.int64))
    raw = tf.io.decode_raw(tf.strings.substr(contents, position, length), tf.uint8,
                           fixed_length=length)
    return tf.cast(raw, tf.int64)


def _little_endian(values, start, width):
    """The unsigned little-endian integer of `values[start:start + width]` (int64 bytes)."""
    return tf.add_n([values[start + i] * (256**i) for i in range(width)])


def checked(tensor, checks):
    """`tensor` (or a structure of tensors), after the assertions `checks` (`(condition,
    message)` pairs) ran in order.

    The first failing one raises InvalidArgument with its `message` (a string tensor); the
    later ones do not run, so an error names the first problem only.
    """
    for condition, message in checks:
        with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
            tensor = tf.nest.map_structure(tf.identity, tensor)
    return tensor


def _code(text):
    """A four-character chunk code as the int64 `_little_endian` reads from its bytes."""
    return int.from_bytes(text.encode("ascii"), "little")


# What `read_header` finds: where the samples are and how to read them (int64 scalars,
# `is_float32` a bool).
WavHeader = collections.namedtuple(
    "WavHeader", ["data_offset", "frames", "channels", "rate", "is_float32"])


def header_spec():
    """The `tf.TensorSpec`s of a `WavHeader` (for `tf.map_fn`)."""
    return WavHeader(*[tf.TensorSpec([], tf.int64)] * 4, tf.TensorSpec([], tf.bool))


def read_header(contents, index, input_name="wav_bytes"):
    """The `WavHeader` of one WAV file (a scalar string), checked; reads no samples.

    At most `MAX_CHUNKS` chunks are read before the `data` chunk, so the walk costs the
    same for any file. Every error message starts with `<input_name>[<index>]`, the file's
    place in the request.
    """

    def message(template, *values):
        return tf.strings.format(f"{input_name}[{{}}]: {template}", (index, *values))

    length = tf.cast(tf.strings.length(contents), tf.int64)
    header = _bytes(contents, tf.constant(0, tf.int64), _HEADER_BYTES)
    is_riff = tf.logical_and(tf.equal(_little_endian(header, 0, 4), _code("RIFF")),
                             tf.equal(_little_endian(header, 8, 4), _code("WAVE")))
    length = checked(length, [(is_riff, message(
        "not a WAV file ({} bytes that do not start with a RIFF/WAVE header); expected "
        "the bytes of a .wav file", length))])

    def cond(offset, fmt, fmt_size, data_offset, data_size, found_data):
        return tf.logical_and(offset + 8 <= length, tf.logical_not(found_data))

    def body(offset, fmt, fmt_size, data_offset, data_size, found_data):
        chunk = _bytes(contents, offset, 8)
        chunk_id = _little_endian(chunk, 0, 4)
        size = _little_endian(chunk, 4, 4)
        is_fmt = tf.equal(chunk_id, _code("fmt "))
        is_data = tf.equal(chunk_id, _code("data"))
        fmt = tf.where(is_fmt, _bytes(contents, offset + 8, _FMT_BYTES), fmt)
        fmt_size = tf.where(is_fmt, size, fmt_size)
        data_offset = tf.where(is_data, offset + 8, data_offset)
        data_size = tf.where(is_data, size, data_size)
        return offset + 8 + size + size % 2, fmt, fmt_size, data_offset, data_size, is_data

    zero = tf.constant(0, tf.int64)
    initial = (tf.constant(_HEADER_BYTES, tf.int64), tf.zeros([_FMT_BYTES], tf.int64), zero,
               zero, zero, tf.constant(False))
    offset, fmt, fmt_size, data_offset, data_size, found_data = tf.while_loop(
        cond, body, initial, maximum_iterations=MAX_CHUNKS)
    chunks_left = offset + 8 <= length  # the walk stopped at MAX_CHUNKS, not at the end

    tag = _little_endian(fmt, 0, 2)
    channels = _little_endian(fmt, 2, 2)
    rate = _little_endian(fmt, 4, 4)
    bits = _little_endian(fmt, 14, 2)
    # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real format tag.
    tag = tf.where(tf.logical_and(tf.equal(tag, _EXTENSIBLE), fmt_size >= _FMT_BYTES),
                   _little_endian(fmt, 24, 2), tag)
    is_pcm16 = tf.logical_and(tf.equal(tag, _PCM), tf.equal(bits, 16))
    is_float32 = tf.logical_and(tf.equal(tag, _FLOAT), tf.equal(bits, 32))
    frame_bytes = channels * bits // 8
    present = tf.maximum(length - data_offset, 0)
    streaming = tf.reduce_any(tf.equal(data_size, _STREAMING_SIZES))
    size = tf.where(streaming, present, data_size)
    frames = size // tf.maximum(frame_bytes, 1)

    frames = checked(frames, [
        (tf.logical_or(found_data, tf.logical_not(chunks_left)), message(
            f"no data chunk among the first {MAX_CHUNKS} chunks of the WAV file; expected "
            f"its audio after at most {MAX_CHUNKS - 1} other chunks")),
        (fmt_size >= 16, message(
            "the WAV file has no valid fmt chunk before its audio; expected a RIFF/WAVE file "
            "with fmt and data chunks")),
        (found_data, message(
            "the WAV file has no data chunk (cut before its audio?)")),
        (tf.logical_or(is_pcm16, is_float32), message(
            "unsupported WAV encoding (format tag {}, {} bits per sample); expected "
            "16-bit PCM or 32-bit float", tag, bits)),
        (channels >= 1, message("the WAV file declares 0 channels")),
        (size <= present, message(
            "truncated WAV file: its data chunk announces {} bytes, {} are present",
            size, present)),
        (frames >= 1, message("the WAV file holds no audio")),
    ])
    return WavHeader(data_offset, frames, channels, rate, is_float32)


def read_samples(contents, header, index, input_name="wav_bytes"):
    """The samples `[frames, channels]` float32 of a WAV file whose header `read_header`
    read, scaled as libsndfile does; NaN or Inf samples are an error."""
    frame_bytes = header.channels * tf.where(header.is_float32, tf.constant(4, tf.int64), 2)
    audio = tf.strings.substr(contents, header.data_offset, header.frames * frame_bytes)

    def pcm16():
        return tf.cast(tf.io.decode_raw(audio, tf.int16), tf.float32) * (1.0 / 32768.0)

    def float32():  # 16-bit samples are finite: only floats are checked
        samples = tf.io.decode_raw(audio, tf.float32)
        return checked(samples, [(tf.reduce_all(tf.math.is_finite(samples)), tf.strings.format(
            f"{input_name}[{{}}]: the WAV file holds NaN or Inf samples", index))])

    return tf.reshape(tf.cond(header.is_float32, float32, pcm16),
                      tf.stack([header.frames, header.channels]))


def decode_wav(contents, index, input_name="wav_bytes"):
    """One WAV file (a scalar string) -> `(samples [frames, channels] float32, rate int64)`.

    Every error message starts with `<input_name>[<index>]`, the file's place in the request.
    """
    header = read_header(contents, index, input_name)
    return read_samples(contents, header, index, input_name), header.rate
