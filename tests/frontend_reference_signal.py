"""The waveforms and masks of `tests/frontend_reference.npz`: the front ends' features of
them, computed with the TensorFlow front ends of keras-astpe 0.1.0 (`tf.signal`), which the
portable front ends must reproduce within 1e-5 (models saved before keep their scores)."""

import numpy as np

SAMPLE_RATE = 16000


def reference_waveforms():
    """Two 0.5 s clips `[2, 8000]` float32, the same on every machine, each over a white
    noise floor as recorded audio has (-60 dB and -30 dB): a chirp with a harmonic, and
    tones with a quiet tail (-40 dB)."""
    t = np.arange(8000, dtype=np.float64) / SAMPLE_RATE
    # PCG64's raw stream is fixed by its definition (numpy's distributions may change).
    raw = np.random.PCG64(20261205).random_raw(8000)
    noise = raw / 2.0**64 * 2.0 - 1.0
    chirp = (0.5 * np.sin(2 * np.pi * (200 * t + 3000 * t**2))
             + 0.1 * np.sin(2 * np.pi * 3100 * t) + 1e-3 * noise)
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 5500 * t) + 0.03 * noise
    tones[6000:] *= 1e-2
    return np.stack([chirp, tones]).astype(np.float32)


def reference_masks(frames, bins):
    """SpecAugment keep-masks `(keep_time [2, frames], keep_freq [2, bins])`: other bands
    per clip."""
    keep_time = np.ones([2, frames], np.float32)
    keep_freq = np.ones([2, bins], np.float32)
    keep_time[0, 5:12] = 0.0
    keep_time[1, frames - 9:] = 0.0
    keep_freq[0, bins // 4:bins // 2] = 0.0
    keep_freq[1, :7] = 0.0
    keep_freq[1, bins - 20:bins - 3] = 0.0
    return keep_time, keep_freq
