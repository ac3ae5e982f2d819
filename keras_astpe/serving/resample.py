"""Band-limited resampling inside a TensorFlow graph, equal to the converters' SciPy resampler.

`keras_astpe.data.audio_io` resamples with `scipy.signal.resample_poly(x, up, down)`: the
signal is upsampled by `up` (zeros between the samples), low-passed by a Kaiser-windowed
sinc FIR (beta 5, `20 * max(up, down) + 1` taps, cutoff at the lower Nyquist frequency) and
decimated by `down`. Only one output in `down` is kept, so output `j` is a dot product of
the input with every `up`-th tap of the filter (a polyphase filter):

    y[j] = sum_n x[n] * h[(j + r) * down - up * n]

Outputs `j = up * q + p` (phase `p`) use inputs `down * q + m` with a weight that depends on
`(p, m)` only, so one matrix `W[m, p]` computes `up` outputs from each frame of inputs
starting at `down * q`: the resampler is frames x matrix, one dense matmul that uses every
core. Short phases (`up` < 64: 8, 24, 32 and 48 kHz) are grouped `blocks` at a time so that
every frame yields at least `MIN_OUTPUTS_PER_FRAME` outputs. The taps are SciPy's own
(`firwin`, cast to float32 and scaled by `up` in float32, as `resample_poly` does for a
float32 waveform), so the results differ from SciPy only by float32 rounding in the sums:
`TOLERANCE` is the largest absolute difference allowed on full-scale audio (the tests check
every rate; measured up to 5e-7).
"""

import dataclasses
import functools
import math

import numpy as np
import scipy.signal

from keras_astpe._startup import tf

SAMPLE_RATE = 16000
SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
TOLERANCE = 2e-6
MIN_OUTPUTS_PER_FRAME = 64
_KAISER_BETA = 5.0  # resample_poly's default window ("kaiser", 5.0)


@dataclasses.dataclass(frozen=True, eq=False)
class PolyphasePlan:
    """How to resample by `up / down` as frames x `weights`.

    Frame `q` holds the inputs `[step * q + offset, step * q + offset + span)` (zero outside
    the signal) and gives the outputs `[outputs_per_frame * q, outputs_per_frame * (q + 1))`.
    """

    up: int
    down: int
    weights: np.ndarray  # [span, outputs_per_frame] float32
    offset: int

    @property
    def step(self):
        return self.down * self.weights.shape[1] // self.up

    @property
    def span(self):
        return self.weights.shape[0]

    @property
    def outputs_per_frame(self):
        return self.weights.shape[1]


@functools.cache
def polyphase_plan(from_rate, to_rate=SAMPLE_RATE):
    """The `PolyphasePlan` of `scipy.signal.resample_poly` from `from_rate` to `to_rate`."""
    divisor = math.gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // divisor, int(from_rate) // divisor
    if up == down:
        raise ValueError(f"no resampling from {from_rate} Hz to {to_rate} Hz")
    # resample_poly's filter, padded in front so that the outputs are centred.
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = scipy.signal.firwin(2 * half_len + 1, 1.0 / max_rate,
                               window=("kaiser", _KAISER_BETA)).astype(np.float32)
    taps *= up
    pre_pad = down - half_len % down
    taps = np.concatenate([np.zeros(pre_pad, np.float32), taps])
    removed = (half_len + pre_pad) // down  # outputs resample_poly drops at the start

    blocks = -(-MIN_OUTPUTS_PER_FRAME // up)
    phase = np.arange(up * blocks)
    # Tap index of input m for output phase p: (p + removed) * down - up * m, in [0, len).
    top = (phase + removed) * down
    first = -((len(taps) - 1 - top) // up)  # ceil((top - len + 1) / up)
    last = top // up
    offset = int(first.min())
    m = np.arange(offset, int(last.max()) + 1)
    index = top[None, :] - up * m[:, None]
    valid = (index >= 0) & (index < len(taps))
    weights = np.where(valid, taps[np.clip(index, 0, len(taps) - 1)], 0.0).astype(np.float32)
    return PolyphasePlan(up=up, down=down, weights=weights, offset=offset)


def output_length(num_samples, from_rate, to_rate=SAMPLE_RATE):
    """Samples `resample_poly` returns: ceil(num_samples * up / down)."""
    divisor = math.gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // divisor, int(from_rate) // divisor
    return -(-num_samples * up // down)


def resample(waveform, from_rate, to_rate=SAMPLE_RATE):
    """`[samples]` float32 at `from_rate` (a Python int) -> `[ceil(samples * up / down)]`."""
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if from_rate == to_rate:
        return waveform
    plan = polyphase_plan(from_rate, to_rate)
    length = tf.shape(waveform, out_type=tf.int64)[0]
    outputs = (length * plan.up + plan.down - 1) // plan.down
    frames = (outputs + plan.outputs_per_frame - 1) // plan.outputs_per_frame
    # Frames come from rows of `step` inputs: frame q is rows q .. q + rows_per_frame - 1.
    rows_per_frame = -(-plan.span // plan.step)
    left = max(0, -plan.offset)
    start = plan.offset + left
    needed = plan.step * (frames + rows_per_frame - 1)
    padded = tf.pad(waveform, [[left, tf.maximum(start + needed - length - left, 0)]])
    rows = tf.reshape(tf.slice(padded, [start], [needed]), [-1, plan.step])
    last_width = plan.span - plan.step * (rows_per_frame - 1)
    parts = [rows[i:i + frames] for i in range(rows_per_frame - 1)]
    parts.append(rows[rows_per_frame - 1:rows_per_frame - 1 + frames, :last_width])
    resampled = tf.matmul(tf.concat(parts, axis=1), plan.weights)
    return tf.reshape(resampled, [-1])[:outputs]


def resample_any(waveform, from_rate, to_rate=SAMPLE_RATE, rates=SUPPORTED_RATES):
    """`resample` for a rate known only when the graph runs (an int tensor among `rates`).

    The caller checks that `from_rate` is one of `rates`; any other value resamples as
    `rates[0]`.
    """
    index = tf.argmax(tf.cast(tf.equal(tf.cast(from_rate, tf.int64), rates), tf.int32),
                      output_type=tf.int32)
    branches = [functools.partial(resample, waveform, rate, to_rate) for rate in rates]
    return tf.switch_case(index, branches)
