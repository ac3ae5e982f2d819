"""Exact resumption: seeds, interval data, dropout; a resumed run ends as an uninterrupted one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.training import keras_internals, outputs, resumption
from keras_astpe.training.run_store import IntervalCheckpoint, restore_latest

BATCH = 4
STEPS = 3  # batches per epoch (= checkpoint interval)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 6)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")


def _interval(k):
    """A repeated, reshuffling tf.data pipeline seeded from the interval, as make_dataset."""
    x, y = _data()
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(32, seed=resumption.derive_seed(7, k), reshuffle_each_iteration=True)
            .batch(BATCH, drop_remainder=True).repeat())


def _model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.3),  # unseeded: torch's global generator on PyTorch
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.3, seed=11),  # a keras SeedGenerator
        keras.layers.Dense(2),
    ])
    model.compile(keras.optimizers.Adam(1e-2, clipvalue=1.0), loss="mse", metrics=["mae"])
    return model


def _fit(model, directory, start, epochs):
    dataset = resumption.interval_dataset(_interval, start, epochs, STEPS)
    keras_internals.build_for_fit(model, dataset)
    model.fit(dataset, epochs=epochs, steps_per_epoch=STEPS, initial_epoch=start, verbose=0,
              callbacks=[resumption.DropoutReseed(5), IntervalCheckpoint(directory, keep=2)])


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    # Dropout masks, data order and optimizer state after a restart are those of a run that
    # never stopped, on every backend.
    full = _model()
    _fit(full, tmp_path / "full", 0, 3)

    resumed = _model()
    _fit(resumed, tmp_path / "part", 0, 1)
    fresh = _model()
    assert restore_latest(fresh, tmp_path / "part") == (STEPS, [])
    _fit(fresh, tmp_path / "part", 1, 3)

    for a, b in zip(full.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 3 * STEPS


def test_dropout_reseed_sets_seed_generators_at_each_epoch(tmp_path):
    model = _model()
    _fit(model, tmp_path / "ckpt", 0, 2)
    states = resumption.seed_generator_states(model)
    assert len(states) == 2  # one per Dropout layer
    for index, state in enumerate(states):
        # Re-seeded at the first batch of epoch 1, then advanced by its training steps.
        value = keras.ops.convert_to_numpy(state.value)
        assert value[0] == resumption.derive_seed(5, 0, 1, index)
    assert keras.ops.convert_to_numpy(states[1].value)[1] == STEPS


def test_log_learning_rate():
    model = _model()
    callback = outputs.LogLearningRate()
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["learning_rate"] == pytest.approx(1e-2)


@pytest.mark.backend_agnostic
def test_interval_dataset_resumed_equals_tail():
    full = list(resumption.interval_dataset(_interval, 0, 3, STEPS).as_numpy_iterator())
    tail = list(resumption.interval_dataset(_interval, 1, 3, STEPS).as_numpy_iterator())
    assert len(full) == 3 * STEPS and len(tail) == 2 * STEPS
    for (xa, ya), (xb, yb) in zip(full[STEPS:], tail, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="start"):
        resumption.interval_dataset(_interval, 3, 3, STEPS)


@pytest.mark.backend_agnostic
def test_derive_seed():
    seeds = {resumption.derive_seed(0, k, p) for k in range(50) for p in range(3)}
    assert len(seeds) == 150
    assert all(1 <= s < 2**30 for s in seeds)
    assert resumption.derive_seed(1, 2) == resumption.derive_seed(1, 2)
