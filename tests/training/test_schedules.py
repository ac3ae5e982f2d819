import inspect
import math

import keras
import numpy as np
import pytest

from keras_astpe.training import InverseSqrtSchedule, WarmupExponentialDecay


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def _lrs(schedule, steps):
    return np.array([_lr(schedule, s) for s in steps])


def test_inverse_sqrt_hand_computed_values():
    schedule = InverseSqrtSchedule(max_lr=1e-3, warmup_steps=100)
    # Update n = iterations + 1; lr = 1e-3 * min(sqrt(100 / n), n / 100).
    assert _lr(schedule, 0) == pytest.approx(1e-5)  # n = 1: no inf/NaN at the first step
    assert _lr(schedule, 49) == pytest.approx(5e-4)  # n = 50: warm-up, linear
    assert _lr(schedule, 99) == pytest.approx(1e-3)  # n = 100: the peak
    assert _lr(schedule, 399) == pytest.approx(5e-4)  # n = 400: sqrt(100 / 400) = 0.5
    assert _lr(schedule, 9999) == pytest.approx(1e-4)  # n = 10000: sqrt(1e-2) = 0.1


def test_inverse_sqrt_matches_noam_formula_and_peaks_at_max_lr():
    max_lr, warmup = 5e-4, 30_000
    schedule = InverseSqrtSchedule(max_lr, warmup)
    steps = np.array([0, 10, 15_000, 29_998, 29_999, 30_000, 100_000, 289_999])
    n = steps + 1.0
    noam = np.minimum(n**-0.5, n * warmup**-1.5)
    expected = noam * max_lr / noam.max()  # the Noam peak n**-0.5 at n = warmup, rescaled
    np.testing.assert_allclose(_lrs(schedule, steps), expected, rtol=1e-5)
    assert _lrs(schedule, steps).max() == pytest.approx(max_lr)


def test_warmup_exponential_decay_hand_computed_values():
    schedule = WarmupExponentialDecay(max_lr=1e-3, warmup_steps=10, decay_steps=100,
                                      decay_rate=0.5)
    assert _lr(schedule, 0) == pytest.approx(1e-4)  # n = 1: 1e-3 * 1 / 10
    assert _lr(schedule, 4) == pytest.approx(5e-4)  # n = 5
    assert _lr(schedule, 9) == pytest.approx(1e-3)  # n = 10: the peak
    assert _lr(schedule, 109) == pytest.approx(5e-4)  # n = 110: one decay period
    assert _lr(schedule, 59) == pytest.approx(1e-3 * math.sqrt(0.5))  # half a period
    assert _lr(schedule, 309) == pytest.approx(1.25e-4)  # three periods


def test_warmup_exponential_decay_without_warmup():
    schedule = WarmupExponentialDecay(2e-4, warmup_steps=0, decay_steps=1, decay_rate=0.85)
    # Per-step decay from the first update: n = 1 -> 0.85 ** 1.
    np.testing.assert_allclose(_lrs(schedule, [0, 1, 2]), 2e-4 * 0.85 ** np.array([1, 2, 3]),
                               rtol=1e-5)


def test_staircase_decays_once_per_stair_as_keras_exponential_decay():
    """ESC-50's x0.85 per epoch of 7 steps over 4 epochs, as Keras' staircase schedule."""
    schedule = WarmupExponentialDecay(1e-4, warmup_steps=0, decay_steps=28,
                                      decay_rate=0.85 ** 4, staircase_steps=7)
    keras_schedule = keras.optimizers.schedules.ExponentialDecay(1e-4, 7, 0.85, staircase=True)
    steps = list(range(28))
    np.testing.assert_allclose(_lrs(schedule, steps), _lrs(keras_schedule, steps), rtol=1e-5)
    assert _lr(schedule, 6) == pytest.approx(1e-4) and _lr(schedule, 7) == pytest.approx(8.5e-5)
    warm = WarmupExponentialDecay(1e-3, warmup_steps=2, decay_steps=4, decay_rate=0.5,
                                  staircase_steps=2)
    np.testing.assert_allclose(_lrs(warm, range(6)), [5e-4, 1e-3, 1e-3, 1e-3, 1e-3 * 0.5 ** 0.5,
                                                     1e-3 * 0.5 ** 0.5], rtol=1e-5)


@pytest.mark.parametrize(
    "schedule",
    [InverseSqrtSchedule(5e-4, 300), WarmupExponentialDecay(5e-4, 300, 500, 0.1)],
    ids=["inverse_sqrt", "exponential"],
)
def test_rises_to_the_peak_then_decays(schedule):
    steps = np.arange(0, 3000, 7)
    lrs = _lrs(schedule, steps)
    assert np.all(np.isfinite(lrs)) and np.all(lrs > 0)
    peak = int(np.argmax(lrs))
    assert np.all(np.diff(lrs[: peak + 1]) > 0)
    assert np.all(np.diff(lrs[peak:]) < 0)
    assert lrs.max() <= 5e-4 * (1 + 1e-6)
    assert _lr(schedule, 299) == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "schedule",
    [InverseSqrtSchedule(5e-4, 30_000), WarmupExponentialDecay(5e-4, 30_000, 10_000, 0.9),
     WarmupExponentialDecay(5e-4, 0, 10_000, 0.1, staircase_steps=50)],
    ids=["inverse_sqrt", "exponential", "staircase"],
)
def test_config_round_trip(schedule):
    config = schedule.get_config()
    assert set(config) == set(inspect.signature(type(schedule)).parameters)
    restored = type(schedule).from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(schedule)
    assert restored.get_config() == config
    # Through an optimizer config, as a saved `.keras` model does it.
    optimizer = keras.optimizers.Adam.from_config(keras.optimizers.Adam(schedule).get_config())
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(
        _lr(schedule, 0))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (InverseSqrtSchedule, {"max_lr": 0.0, "warmup_steps": 10}),
        (InverseSqrtSchedule, {"max_lr": 1e-3, "warmup_steps": 0}),
        (InverseSqrtSchedule, {"max_lr": 1e-3, "warmup_steps": 2.5}),
        (WarmupExponentialDecay, {"max_lr": 1e-3, "warmup_steps": -1, "decay_steps": 1,
                                  "decay_rate": 0.5}),
        (WarmupExponentialDecay, {"max_lr": 1e-3, "warmup_steps": 1, "decay_steps": 0,
                                  "decay_rate": 0.5}),
        (WarmupExponentialDecay, {"max_lr": 1e-3, "warmup_steps": 1, "decay_steps": 1,
                                  "decay_rate": 1.5}),
    ],
)
def test_invalid_arguments(cls, kwargs):
    with pytest.raises(ValueError, match="must be"):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [InverseSqrtSchedule, WarmupExponentialDecay])
def test_drives_adam_in_fit(cls):
    schedule = (InverseSqrtSchedule(1e-2, 4) if cls is InverseSqrtSchedule
                else WarmupExponentialDecay(1e-2, 4, 3, 0.5))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(learning_rate=schedule, clipvalue=1.0), "mse")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 3)).astype("float32")
    y = rng.uniform(size=(12, 2)).astype("float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False)
    optimizer = model.optimizer
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 6
    # The optimizer reports the rate of its next update, schedule(iterations).
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(
        _lr(schedule, 6))
