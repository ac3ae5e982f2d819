"""The private Keras methods keras_internals relies on are those it was written for, and
the fused Adam update is Keras' Adam.

One test per function of `keras_internals`: it fails when the installed Keras has another
source for any method the function calls, replaces or depends on. Then check the function
against the new source (its behaviour is tested here, in test_distribution.py and in
test_resumption.py) and add the new hash to `keras_internals.RELIES_ON`.
"""

import hashlib
import importlib
import inspect

import keras
import numpy as np
import pytest

from keras_astpe.training import keras_internals
from keras_astpe.training.schedules import WarmupExponentialDecay


def _source_hash(path):
    """The first 16 hex digits of the sha256 of the source of `path`, a dotted module path
    followed by attribute names."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
    raise ImportError(path)


@pytest.mark.backend_agnostic
def test_every_function_lists_what_it_relies_on():
    functions = {name for name, value in vars(keras_internals).items()
                 if inspect.isfunction(value) and value.__module__ == keras_internals.__name__}
    assert functions == set(keras_internals.RELIES_ON)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("function", sorted(keras_internals.RELIES_ON))
def test_the_keras_methods_are_those_it_was_written_for(function):
    changed = {path: _source_hash(path)
               for path, hashes in keras_internals.RELIES_ON[function].items()
               if _source_hash(path) not in hashes}
    assert not changed, (
        f"Keras {keras.__version__} changed what keras_internals.{function} relies on "
        f"(source hashes {changed}): check the function against it, then add the hashes")


@pytest.mark.backend_agnostic
def test_a_changed_method_is_noticed():
    path = "keras.src.trainers.trainer.Trainer._symbolic_build"
    assert len(_source_hash(path)) == 16
    assert _source_hash(path) != _source_hash("keras.src.trainers.trainer.Trainer.fit")


def _adam_steps(optimizer_cls, gradients, **kwargs):
    """The variables after Adam applied `gradients` (a list per step) to fixed variables."""
    rng = np.random.default_rng(1)
    variables = [keras.Variable(rng.standard_normal(shape).astype("float32"))
                 for shape in ((5, 3), (3,), (2, 4, 2))]
    optimizer = optimizer_cls(**kwargs)
    for step in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step], variables)
    return [keras.ops.convert_to_numpy(v) for v in variables], optimizer


@pytest.mark.parametrize("kwargs", [
    {"learning_rate": 1e-2, "clipvalue": 0.5},
    {"learning_rate": WarmupExponentialDecay(1e-2, 2, 3, 0.5), "clipvalue": 1.0},
    {"learning_rate": 1e-3, "epsilon": 1e-3},  # where epsilon weighs: small gradients
    {"learning_rate": 1e-2, "amsgrad": True, "clipnorm": 1.0},  # Keras' own update
], ids=["clipvalue", "schedule", "epsilon", "amsgrad_clipnorm"])
def test_fused_adam_is_keras_adam(kwargs, monkeypatch):
    fused_calls = []
    if keras.backend.backend() == "torch":
        import torch

        fused = torch._fused_adam_
        monkeypatch.setattr(torch, "_fused_adam_",
                            lambda *a, **k: fused_calls.append(1) or fused(*a, **k))
    rng = np.random.default_rng(0)
    scales = (3.0, 1e-4, 0.2, 1e-6, 1.0, 2.0)  # some beyond the clip value, some tiny
    gradients = [[(scale * rng.standard_normal(shape)).astype("float32")
                  for shape in ((5, 3), (3,), (2, 4, 2))] for scale in scales]
    fused_cls = keras_internals.fused_adam_on_torch(keras.optimizers.Adam)
    expected, _ = _adam_steps(keras.optimizers.Adam, gradients, **kwargs)
    actual, optimizer = _adam_steps(fused_cls, gradients, **kwargs)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == len(scales)
    fusable = keras.backend.backend() == "torch" and not kwargs.get("amsgrad")
    assert len(fused_calls) == (len(scales) if fusable else 0)
    config = keras.saving.serialize_keras_object(optimizer)  # saved as Keras' Adam
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, keras.optimizers.Adam)
    assert restored.get_config() == optimizer.get_config()


def test_fused_adam_is_keras_adam_elsewhere():
    fused_cls = keras_internals.fused_adam_on_torch(keras.optimizers.Adam)
    if keras.backend.backend() == "torch":
        assert fused_cls is not keras.optimizers.Adam and fused_cls.__name__ == "Adam"
    else:
        assert fused_cls is keras.optimizers.Adam
