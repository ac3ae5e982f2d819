"""`ops_for` computes TensorFlow tensors with TensorFlow's ops and anything else with the
Keras backend's; `constant` is computed once, eagerly."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import framework_ops


def test_tensorflow_tensors_get_tensorflows_ops_on_every_backend():
    assert framework_ops.ops_for(tf.zeros(2)).__name__ == "keras.src.backend.tensorflow"
    backend_ops = framework_ops.ops_for(keras.ops.zeros(2))
    assert backend_ops.__name__ == f"keras.src.backend.{keras.backend.backend()}"
    assert framework_ops.ops_for(np.zeros(2)) is backend_ops
    assert framework_ops.ops_for(np.zeros(2), tf.zeros(2)).__name__.endswith(".tensorflow")


def test_a_constant_is_computed_once_per_backend_and_arguments():
    calls = []

    def ramp(ops, length):
        calls.append(ops)
        return ops.numpy.arange(length, dtype="float32") * 0.5

    tensorflow_ops = framework_ops.ops_for(tf.zeros(1))
    first = framework_ops.constant(tensorflow_ops, ramp, 4)
    again = framework_ops.constant(tensorflow_ops, ramp, 4)
    np.testing.assert_array_equal(first, [0.0, 0.5, 1.0, 1.5])
    assert again is first and first.dtype == np.float32 and len(calls) == 1
    inside_a_graph = tf.function(lambda: tf.constant(framework_ops.constant(
        tensorflow_ops, ramp, 5)))()
    np.testing.assert_array_equal(inside_a_graph.numpy(), np.arange(5) * 0.5)
    if keras.backend.backend() != "tensorflow":  # JAX, PyTorch: computed in numpy
        backend_ops = framework_ops.ops_for(keras.ops.zeros(1))
        np.testing.assert_array_equal(framework_ops.constant(backend_ops, ramp, 4), first)
        assert calls[-1] is framework_ops.NUMPY_OPS


# A front end traced by AutoGraph (a tf.data map) on the JAX backend, in a fresh process,
# so that no earlier test has converted (and warned about) anything yet.
_TRACED_ON_JAX = """
import tensorflow as tf
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter
converter = KaldiFbankAudioConverter()
dataset = tf.data.Dataset.from_tensor_slices(tf.zeros([1, 16000])).map(converter)
print(next(iter(dataset)).shape)
"""


@pytest.mark.backend_agnostic
def test_autograph_converts_the_front_ends_without_a_warning():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", _TRACED_ON_JAX], env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    assert "(1024, 128)" in result.stdout
    assert "AutoGraph" not in result.stderr, result.stderr
