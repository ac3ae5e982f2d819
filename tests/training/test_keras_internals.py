"""The private Keras methods keras_internals relies on are those it was written for.

One test per function of `keras_internals`: it fails when the installed Keras has another
source for any method the function calls, replaces or depends on. Then check the function
against the new source (its behaviour is tested in test_distribution.py and
test_resumption.py) and add the new hash to `keras_internals.RELIES_ON`.
"""

import hashlib
import importlib
import inspect

import keras
import pytest

from keras_astpe.training import keras_internals

pytestmark = pytest.mark.backend_agnostic


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


def test_every_function_lists_what_it_relies_on():
    functions = {name for name, value in vars(keras_internals).items()
                 if inspect.isfunction(value) and value.__module__ == keras_internals.__name__}
    assert functions == set(keras_internals.RELIES_ON)


@pytest.mark.parametrize("function", sorted(keras_internals.RELIES_ON))
def test_the_keras_methods_are_those_it_was_written_for(function):
    changed = {path: _source_hash(path)
               for path, hashes in keras_internals.RELIES_ON[function].items()
               if _source_hash(path) not in hashes}
    assert not changed, (
        f"Keras {keras.__version__} changed what keras_internals.{function} relies on "
        f"(source hashes {changed}): check the function against it, then add the hashes")


def test_a_changed_method_is_noticed():
    path = "keras.src.trainers.trainer.Trainer._symbolic_build"
    assert len(_source_hash(path)) == 16
    assert _source_hash(path) != _source_hash("keras.src.trainers.trainer.Trainer.fit")
