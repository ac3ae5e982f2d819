"""The Keras backend ops that compute a tensor: TensorFlow's for a TensorFlow tensor, the
Keras backend's for anything else.

The front ends are written once against a Keras backend module (its `numpy`, `math` and
`nn` ops, `convert_to_tensor`, `cast`, `shape`), as Keras' own audio preprocessing layers
are. A TensorFlow tensor (tf.data on the input workers, a `tf.function`: the TensorFlow,
ONNX and LiteRT exports) is computed with TensorFlow's ops whatever the Keras backend, so
that the training pipeline runs on TensorFlow beside a JAX or PyTorch model; a numpy array
or a JAX or PyTorch tensor (inside a model) with the Keras backend's, on its device. The
modules are Keras' private `keras.src.backend.<name>`, which `keras.ops` dispatches to: no
public API picks a backend other than the process's.
"""

import functools
import importlib
import sys
import types

import keras
import numpy as np


def ops_for(*tensors):
    """The Keras backend module that computes `tensors` (see the module docstring)."""
    name = keras.backend.backend()
    if name != "tensorflow" and any(is_tensorflow(tensor) for tensor in tensors):
        name = "tensorflow"
    return _backend_module(name)


@functools.cache
def _backend_module(name):
    # Cached, so that AutoGraph (tf.data, tf.function) never converts importlib's internals.
    return importlib.import_module(f"keras.src.backend.{name}")


def is_tensorflow(value):
    """Whether `value` is a TensorFlow tensor or variable (eager or in a graph), without
    importing TensorFlow where nothing has."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, (tf.Tensor, tf.Variable))


# The few backend-module functions the constants use, in numpy (not Keras' numpy backend:
# importing `keras.src.backend.numpy` rebinds `keras.src.backend.numpy`, the ops of Keras'
# own backend).
NUMPY_OPS = types.SimpleNamespace(numpy=np, convert_to_tensor=np.asarray)


def constant(ops, compute, *args):
    """`compute(ops, *args)` (a front end's window or filterbank) as a float32 numpy array,
    computed once per backend and arguments (hashable), eagerly.

    With TensorFlow's ops when `ops` is TensorFlow's, lifted out of any graph
    (`tf.init_scope`), so that eager code, `tf.function`s and tf.data (which optimizes its
    functions' arithmetic otherwise) embed the very same constant; with numpy when `ops`
    is JAX's or PyTorch's (no device work, no tracing), through `NUMPY_OPS`.
    """
    return _constant(ops.__name__.endswith(".tensorflow"), compute, args)


@functools.lru_cache(maxsize=32)
def _constant(tensorflow, compute, args):
    if not tensorflow:
        return np.asarray(compute(NUMPY_OPS, *args), np.float32)
    ops = _backend_module("tensorflow")
    with sys.modules["tensorflow"].init_scope():
        return np.asarray(compute(ops, *args), np.float32)
