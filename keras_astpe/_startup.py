"""`tf`: TensorFlow, imported when the library first uses it.

The modules a model needs (front end, audio converters, serving) import TensorFlow through
`tf`, so that `import keras_astpe` imports no TensorFlow on JAX and PyTorch, and models
build, train, save and load there where TensorFlow is not installed. A plain optional
import (`try: import tensorflow`) would import TensorFlow with the library on every backend:
seconds, and its start-up lines, in a process that may never use it.
"""

from keras_astpe_startup import import_tensorflow


class _TensorFlowOnUse:
    """`tensorflow`, imported (by `import_tensorflow`) when an attribute is first used;
    where it is not installed, that use says what needs it."""

    def __getattr__(self, name):
        if name.startswith("__"):  # hasattr(), copy, pickle, inspect: not TensorFlow's
            raise AttributeError(name)
        try:
            tf = import_tensorflow()
        except ModuleNotFoundError as error:
            if error.name != "tensorflow":
                raise
            raise ModuleNotFoundError(
                f"TensorFlow is not installed (needed for tf.{name}): keras_astpe's input "
                "pipeline and TensorFlow exports run on TensorFlow; pip install tensorflow",
                name="tensorflow") from None
        value = getattr(tf, name)
        setattr(self, name, value)  # the next use is a plain attribute
        return value


tf = _TensorFlowOnUse()
