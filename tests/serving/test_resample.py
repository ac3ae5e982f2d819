"""The in-graph resampler against scipy.signal.resample_poly as keras_astpe.data.audio_io
uses it, for every supported rate."""

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.data import audio_io
from keras_astpe.serving import resample

pytestmark = pytest.mark.backend_agnostic


def _audio(rate, seconds=1.3, seed=0):
    """Full-scale noise plus a tone: the worst case for rounding differences."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    signal = 0.6 * rng.uniform(-1, 1, t.size) + 0.4 * np.sin(2 * np.pi * 440 * t)
    return signal.astype(np.float32)


@pytest.mark.parametrize("rate", resample.SUPPORTED_RATES)
def test_agrees_with_the_converters_scipy_resampler(rate):
    for waveform in (_audio(rate), _audio(rate)[:1], _audio(rate)[:777]):
        expected = audio_io.resample(waveform, rate, 16000)
        got = resample.resample(waveform, rate).numpy()
        assert got.shape == expected.shape == (resample.output_length(waveform.size, rate),)
        np.testing.assert_allclose(got, expected, rtol=0, atol=resample.TOLERANCE)


def test_rate_known_only_when_the_graph_runs():
    """`resample_any` picks the filter from a rate tensor, in one traced graph."""
    run = tf.function(lambda waveform, rate: resample.resample_any(waveform, rate),
                      input_signature=[tf.TensorSpec([None], tf.float32),
                                       tf.TensorSpec([], tf.int64)])
    for rate in (8000, 16000, 44100):
        waveform = _audio(rate, seconds=0.5, seed=rate)
        np.testing.assert_array_equal(run(waveform, rate).numpy(),
                                      resample.resample(waveform, rate).numpy())


def test_band_limited_content_above_the_new_nyquist_is_removed():
    rate = 44100
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)  # above 8 kHz
    speech_band = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    removed = resample.resample(tone, rate).numpy()[1000:-1000]
    kept = resample.resample(speech_band, rate).numpy()[1000:-1000]
    assert np.abs(removed).max() < 1e-3  # not aliased to 4 kHz
    assert 0.49 < np.abs(kept).max() < 0.51


def test_the_plan_is_the_polyphase_form_of_the_filter():
    plan = resample.polyphase_plan(44100)
    assert (plan.up, plan.down, plan.outputs_per_frame, plan.step) == (160, 441, 160, 441)
    # Every tap of the 2 * 10 * 441 + 1 tap filter is used exactly once.
    assert np.count_nonzero(plan.weights) == 2 * 10 * 441 + 1
    small = resample.polyphase_plan(48000)  # up = 1: 64 outputs per frame
    assert (small.up, small.down, small.outputs_per_frame, small.step) == (1, 3, 64, 192)
    with pytest.raises(ValueError, match="no resampling"):
        resample.polyphase_plan(16000)
