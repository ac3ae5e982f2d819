"""Learning-rate schedules of the AST-PE recipe (SPEC section 5).

Both schedules take the optimizer's 0-based `iterations` and evaluate at update number
`n = iterations + 1`, so the first update never divides by zero and the peak `max_lr` is
reached at update `n == warmup_steps` (that is, `iterations == warmup_steps - 1`).
"""

import keras
from keras import ops


def _check_positive(name, value):
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value}")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_astpe")
class InverseSqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then inverse square-root decay (the original code's schedule).

    `lr(n) = max_lr * min(sqrt(warmup_steps / n), n / warmup_steps)`, which is the
    Transformer ("Noam") schedule `min(n^-0.5, n * warmup^-1.5)` rescaled so that its peak is
    exactly `max_lr` at the end of warm-up.

    Args:
        max_lr: peak learning rate, reached at update `warmup_steps` (paper: 5e-4).
        warmup_steps: length of the linear warm-up in optimizer updates (paper: 30000).

    Example:

    ```python
    optimizer = keras.optimizers.Adam(InverseSqrtSchedule(5e-4, 30_000), clipvalue=1.0)
    ```
    """

    def __init__(self, max_lr, warmup_steps):
        _check_positive("max_lr", max_lr)
        self.max_lr = float(max_lr)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 1)

    def __call__(self, step):
        n = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        return self.max_lr * ops.minimum(ops.sqrt(ops.divide(warmup, n)), n / warmup)

    def get_config(self):
        return {"max_lr": self.max_lr, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="keras_astpe")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then exponential decay: continuous (the paper's text) or in stairs.

    `lr(n) = max_lr * n / warmup_steps` for `n <= warmup_steps`, then
    `max_lr * decay_rate ** ((n - warmup_steps) / decay_steps)`. With `staircase_steps=k`
    the decay advances once every `k` updates after the warm-up instead:
    `max_lr * decay_rate ** (k * floor((iterations - warmup_steps) / k) / decay_steps)`
    (the paper's ESC-50 fine-tuning: x0.85 once per epoch).

    Args:
        max_lr: peak learning rate, reached at update `warmup_steps`.
        warmup_steps: length of the linear warm-up in optimizer updates; 0 disables it.
        decay_steps: number of updates over which the rate is multiplied by `decay_rate`.
        decay_rate: multiplicative factor per `decay_steps` updates, in (0, 1].
        staircase_steps: None (continuous decay) or the updates between two decays.
    """

    def __init__(self, max_lr, warmup_steps, decay_steps, decay_rate, staircase_steps=None):
        _check_positive("max_lr", max_lr)
        _check_positive("decay_steps", decay_steps)
        if not 0 < decay_rate <= 1:
            raise ValueError(f"`decay_rate` must be in (0, 1]. Received: decay_rate={decay_rate}")
        self.max_lr = float(max_lr)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.decay_steps = float(decay_steps)
        self.decay_rate = float(decay_rate)
        self.staircase_steps = (None if staircase_steps is None
                                else _check_int("staircase_steps", staircase_steps, 1))

    def __call__(self, step):
        n = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        if self.staircase_steps is None:
            elapsed = ops.maximum(n - warmup, 0.0)
        else:
            stair = float(self.staircase_steps)
            elapsed = stair * ops.floor(ops.maximum(n - 1.0 - warmup, 0.0) / stair)
        decay = self.max_lr * ops.power(self.decay_rate, elapsed / self.decay_steps)
        if self.warmup_steps == 0:
            return decay
        return ops.where(n < warmup, self.max_lr * n / warmup, decay)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase_steps": self.staircase_steps,
        }
