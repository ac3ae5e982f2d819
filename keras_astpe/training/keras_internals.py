"""Every use of Keras' private trainer and optimizer methods in keras_astpe, in one module.

Keras has no public way to do what these do:
- `build_from_specs`: build a model's compiled loss, metrics and optimizer from the
  dataset's tensor specs, without reading data (tf.distribute).
- `skip_build_from_data`: stop the TensorFlow trainer reading a batch before every `fit`
  and `evaluate` to build the model; it restarts the data afterwards, i.e. a new shuffle.
- `clip_after_replica_sum`: an optimizer that clips the gradient summed over the replicas
  of tf.distribute, as on one device, instead of each replica's part of it.
- `build_for_fit`: the same build as `build_from_specs` on JAX and PyTorch, through a public
  `evaluate` on zeros, relying on `fit` skipping its own build when all is built.
- `fused_adam_on_torch`: Keras' Adam (with clipping by value) whose update runs on the
  PyTorch backend as PyTorch's fused multi-tensor Adam kernel, the same arithmetic in one
  pass over each variable instead of Keras' ten elementwise passes.

`RELIES_ON` names, per function, the private Keras methods it calls, replaces or depends on,
with the sha256 (first 16 hex digits) of their source in the Keras versions it was checked
against (3.14.0 and 3.15.1; pyproject.toml bounds keras to them).
`tests/training/test_keras_internals.py` fails when the installed Keras has another source:
check the function against the new one, then add its hash here.
"""

import numpy as np

_SYMBOLIC_BUILD = {"keras.src.trainers.trainer.Trainer._symbolic_build": {"96220cc3b88fe768"}}

RELIES_ON = {
    "build_from_specs": _SYMBOLIC_BUILD,
    "skip_build_from_data": {
        "keras.src.backend.tensorflow.trainer.TensorFlowTrainer._maybe_symbolic_build":
            {"92a504f5eba9b29f"},
    },
    "clip_after_replica_sum": {
        "keras.src.optimizers.base_optimizer.BaseOptimizer._clip_gradients":
            {"152b956e23c91ad9"},
        "keras.src.optimizers.base_optimizer.BaseOptimizer._backend_apply_gradients":
            {"48d6e24d58039241"},
        "keras.src.backend.tensorflow.optimizer.TFOptimizer._backend_update_step":
            {"00bd759c099a6b72"},
        "keras.src.backend.tensorflow.optimizer.TFOptimizer._all_reduce_sum_gradients":
            {"953512efa56c9680"},
    },
    "build_for_fit": _SYMBOLIC_BUILD,
    "fused_adam_on_torch": {
        "keras.src.optimizers.base_optimizer.BaseOptimizer._clip_gradients":
            {"152b956e23c91ad9"},
        "keras.src.optimizers.base_optimizer.BaseOptimizer._backend_apply_gradients":
            {"48d6e24d58039241"},
        "keras.src.backend.torch.optimizers.torch_parallel_optimizer.TorchParallelOptimizer"
        "._backend_update_step": {"039e46a2117693da"},
        "keras.src.backend.torch.optimizers.torch_adam.Adam._parallel_update_step":
            {"8034ae3d81d00f24"},
    },
}

def build_from_specs(model, element_spec):
    """Builds `model`, its compiled loss and metrics and its optimizer from the specs of a
    dataset's `(features, targets, ...)` elements (symbolic tensors: no data are read).
    Under tf.distribute, call it in the strategy's scope."""
    model._symbolic_build(data_batch=tuple(element_spec[:2]))


def skip_build_from_data(model):
    """Makes the TensorFlow trainer of a built `model` skip its build before `fit` and
    `evaluate`, which reads a first batch under tf.distribute and then restarts the data."""
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def clip_after_replica_sum(cls):
    """`cls` (a Keras optimizer) clipping the gradient summed over the replicas, as on one
    device, instead of each replica's part of it."""
    for method in ("_clip_gradients", "_all_reduce_sum_gradients"):
        if not hasattr(cls, method):
            raise RuntimeError(f"{cls.__name__} has no {method}: this Keras version is not "
                               "supported by --distribute on TensorFlow")

    class ClipAfterReplicaSum(cls):
        def _clip_gradients(self, grads):
            import tensorflow as tf

            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                return grads  # a replica's part: clipped after the sum
            return super()._clip_gradients(grads)

        def _all_reduce_sum_gradients(self, grads_and_vars):
            summed = super()._all_reduce_sum_gradients(grads_and_vars)
            grads = cls._clip_gradients(self, [grad for grad, _ in summed])
            return list(zip(grads, [variable for _, variable in summed], strict=True))

    ClipAfterReplicaSum.__name__ = ClipAfterReplicaSum.__qualname__ = cls.__name__
    ClipAfterReplicaSum.__module__ = cls.__module__  # saved as, and loaded as, `cls`
    return ClipAfterReplicaSum


def build_for_fit(model, dataset):
    """Builds the compiled loss, metrics and optimizer of `model` before `fit`.

    On JAX and PyTorch, `fit` otherwise reads a first batch to build them and then restarts
    its dataset; a tf.data pipeline that reshuffles on every iteration (as `make_dataset`
    does) then trains on its second shuffle, and a resumed run on another shuffle than the
    uninterrupted run. Here one batch of zeros shaped like `dataset.element_spec` (the data
    are not read) is evaluated instead, with no effect on the training state.
    """
    def zeros(spec):
        return np.zeros([1 if dim is None else dim for dim in spec.shape],
                        spec.dtype.as_numpy_dtype)

    features, targets = (zeros(spec) for spec in dataset.element_spec[:2])
    model.evaluate(features, targets, batch_size=len(features), verbose=0)
    if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def fused_adam_on_torch(cls):
    """`cls` (Keras' `Adam`) computing its update on the PyTorch backend with PyTorch's
    fused Adam kernel (`torch._fused_adam_`), and clipping by value with two multi-tensor
    clamps (gradients filtered of `None` by Keras before); on other backends, `cls` itself.

    The arithmetic is Keras Adam's: its epsilon is added to the uncorrected sqrt(v), which is
    PyTorch's epsilon divided by sqrt(1 - beta_2^t), so the kernel is handed that. The step
    count and the learning rate are read as Python numbers once per step. Other settings
    (AMSGrad, clipping by norm, gradient accumulation, mixed-dtype or mixed-device
    variables, a `torch.compile`d step) take Keras' own update.
    """
    import keras

    if keras.backend.backend() != "torch":
        return cls
    import torch
    from keras.src.backend.torch.optimizers import torch_adam

    if cls is keras.optimizers.Adam:
        cls = torch_adam.Adam  # what Keras instantiates for Adam on PyTorch

    class FusedAdam(cls):
        def _fusable(self, tensors):
            return (not self.amsgrad and not self.gradient_accumulation_steps
                    and not torch.compiler.is_compiling()
                    and len({(t.dtype, t.device) for t in tensors}) == 1)

        def _clip_gradients(self, grads):
            if self.clipnorm or self.global_clipnorm or not self.clipvalue:
                return super()._clip_gradients(grads)
            clipped = torch._foreach_clamp_min(list(grads), -self.clipvalue)
            torch._foreach_clamp_max_(clipped, self.clipvalue)
            return clipped

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            variables = [v.value for v in trainable_variables]
            if not self._fusable([*variables, *grads]):
                return super()._backend_update_step(grads, trainable_variables, learning_rate)
            with torch.no_grad():
                index = [self._get_variable_index(v) for v in trainable_variables]
                step = float(self.iterations.value.item()) + 1.0
                torch._fused_adam_(
                    variables, list(grads), [self._momentums[i].value for i in index],
                    [self._velocities[i].value for i in index], [],
                    [torch.tensor(step, device=variables[0].device)] * len(variables),
                    lr=float(learning_rate), beta1=float(self.beta_1),
                    beta2=float(self.beta_2), weight_decay=0.0,
                    eps=float(self.epsilon) / (1.0 - float(self.beta_2) ** step) ** 0.5,
                    amsgrad=False, maximize=False)

    FusedAdam.__name__, FusedAdam.__qualname__ = cls.__name__, cls.__qualname__
    FusedAdam.__module__ = cls.__module__  # saved as, and loaded as, Keras' own Adam
    return FusedAdam
