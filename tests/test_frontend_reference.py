"""The front ends against the features of the tf.signal front ends they replace, fixed in
`frontend_reference.npz` (see `frontend_reference_signal`), on every backend, in a model and
in tf.data.

On TensorFlow the values are those, to the bit (the same float32 ops). JAX and PyTorch
compute the FFT with other libraries: the values agree to 1e-5 but for the bins far below a
frame's loudest, where float32 rounding of the FFT shows (the kaldi fbank, which has no
log offset, the most); models' scores agree to 1e-4 (`tests/test_tag_without_tensorflow.py`).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from frontend_reference_signal import reference_masks, reference_waveforms

from keras_astpe.frontend import FrontEndConfig
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter, LogMelAudioConverter
from keras_astpe.normalization import NormalizationStats

REFERENCE = np.load(__import__("pathlib").Path(__file__).with_name("frontend_reference.npz"))
CONVERTERS = {
    "log_mel": LogMelAudioConverter(
        FrontEndConfig(), NormalizationStats(low=-6.0, high=2.5, relu=False)),
    "kaldi_fbank": KaldiFbankAudioConverter(KaldiFbankConfig(target_frames=64)),
}
MASK_SHAPES = {"log_mel": (48, 257), "kaldi_fbank": (64, 128)}


def assert_matches_reference(features, expected):
    features = keras.ops.convert_to_numpy(features)
    assert features.shape == expected.shape and features.dtype == np.float32
    error = np.abs(features - expected)
    if keras.backend.backend() == "tensorflow":
        assert error.max() <= 1e-5, error.max()
    else:
        assert_within_fft_rounding(error)


def assert_within_fft_rounding(error):
    """Another FFT's float32 rounding: 1e-5 but in the bins far below a frame's loudest."""
    assert error.max() <= 2e-3, error.max()
    assert np.mean(error <= 1e-5) >= 0.9, np.mean(error <= 1e-5)
    assert error.mean() <= 1e-5, error.mean()


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("kind", sorted(CONVERTERS))
def test_features_match_the_tf_signal_front_ends(kind, masked):
    converter = CONVERTERS[kind]
    masks = reference_masks(*MASK_SHAPES[kind]) if masked else None
    expected = REFERENCE[kind + ("_masked" if masked else "")]
    assert_matches_reference(converter.features(reference_waveforms(), masks=masks), expected)


@pytest.mark.parametrize("kind", sorted(CONVERTERS))
def test_in_a_compiled_model_on_the_backend(kind):
    """The layer inside a model, traced by the backend (jit on JAX, a graph on TensorFlow)."""
    converter = CONVERTERS[kind]
    waveform = keras.Input((8000,))
    model = keras.Model(waveform, converter(waveform))
    features = model.predict(reference_waveforms(), batch_size=2, verbose=0)
    assert_matches_reference(features, REFERENCE[kind])


@pytest.mark.parametrize("kind", sorted(CONVERTERS))
def test_in_tf_data_the_values_are_tensorflows_on_every_backend(kind):
    """`dataset.map(converter)` runs TensorFlow's ops on the input workers, whatever the
    backend: the reference values to the bit, masks given or not."""
    converter = CONVERTERS[kind]
    masks = reference_masks(*MASK_SHAPES[kind])
    dataset = tf.data.Dataset.from_tensor_slices(
        (reference_waveforms(), *masks)).batch(2)
    plain = next(iter(dataset.map(lambda waveform, *_: converter(waveform))))
    masked = next(iter(dataset.map(lambda waveform, *m: converter(waveform, masks=m))))
    assert isinstance(plain, tf.Tensor)
    np.testing.assert_array_equal(plain.numpy(), REFERENCE[kind])
    np.testing.assert_array_equal(masked.numpy(), REFERENCE[kind + "_masked"])


@pytest.mark.parametrize("kind", sorted(CONVERTERS))
def test_the_dft_as_a_matrix_product_gives_the_fft_values(kind):
    """`dft="matmul"` (the ONNX export's): float32 rounding apart, the FFT's values."""
    converter = CONVERTERS[kind].with_dft("matmul")
    assert converter.get_config()["dft"] == "matmul"
    features = keras.ops.convert_to_numpy(converter.features(reference_waveforms()))
    assert_within_fft_rounding(np.abs(features - REFERENCE[kind]))
