"""Base class of the functional subclassed models (backbone and classifier)."""

import keras


class FunctionalModel(keras.Model):
    """A functional `keras.Model` whose subclass builds its layers before `__init__`.

    The subclasses create their layers first, wire them into a functional graph and only
    then call `super().__init__(inputs, outputs)` (the keras-hub Backbone/Task pattern).
    On the torch backend `torch.nn.Module.__setattr__` refuses sub-modules before
    `Module.__init__`; all state is tracked by the functional graph, so until then
    attributes are set plainly.
    """

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._initialized = True
        if dtype is not None:
            # The functional constructor does not apply `dtype` on every backend.
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def __setattr__(self, name, value):
        if keras.backend.backend() == "torch" and not hasattr(self, "_initialized"):
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)
