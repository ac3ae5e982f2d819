"""BestCheckpoint: the weights of the best validation epoch, kept across resumption."""

import json
import os

import keras
import numpy as np
import pytest

from keras_astpe.training.run_store import DamagedFileError
from keras_astpe.training.selection import BestCheckpoint, best_of

BATCH = 4
STEPS_PER_EPOCH = 2
# The validation value of each epoch, injected into the epoch logs: best at epoch 3.
VALUES = [0.2, 0.5, 0.4, 0.7, 0.7, 0.6]


class FakeValidation(keras.callbacks.Callback):
    """Puts `values[epoch]` into the epoch logs as `val_score`; records the weights."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        logs["val_score"] = self.values[epoch]
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.weights[step] = [np.array(w) for w in self.model.get_weights()]


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def _data(epochs):
    rng = np.random.default_rng(0)
    size = epochs * STEPS_PER_EPOCH * BATCH
    return (rng.normal(size=(size, 3)).astype("float32"),
            rng.normal(size=(size, 2)).astype("float32"))


def _fit(model, callbacks, epochs, initial_epoch=0):
    x, y = _data(len(VALUES))
    model.fit(x, y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=STEPS_PER_EPOCH, shuffle=False, verbose=0, callbacks=callbacks)


def _assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


def test_best_of_takes_the_earliest_highest_number():
    assert best_of([(2, 0.5), (4, 0.7), (6, 0.7), (8, float("nan"))]) == (4, 0.7)
    assert best_of([(2, None), (4, float("nan"))]) is None
    assert best_of([]) is None


def test_the_best_epoch_is_kept_and_applied():
    model = _model()
    validation = FakeValidation(VALUES)
    best = BestCheckpoint("val_score")
    _fit(model, [validation, best], epochs=len(VALUES))
    # Epoch 3 (step 8) is the first to reach 0.7; epoch 4's equal value does not replace it.
    assert (best.best_step, best.best_value) == (8, 0.7)
    assert best.history == tuple((2 * (i + 1), v) for i, v in enumerate(VALUES))
    last = [np.array(w) for w in model.get_weights()]
    best.apply_to(model)
    _assert_same(model.get_weights(), validation.weights[8])
    _assert_same(best.last_weights, last)


def test_missing_monitor_is_a_clear_error():
    with pytest.raises(ValueError, match="val_accuracy.*validate during training"):
        _fit(_model(), [BestCheckpoint("val_accuracy")], epochs=1)


def test_state_keeps_only_the_weights_a_resumed_run_needs(tmp_path):
    validation = FakeValidation(VALUES)
    best = BestCheckpoint("val_score", state_dir=tmp_path, keep=3)
    _fit(_model(), [validation, best], epochs=len(VALUES))
    # The best as of each of the last 3 recorded steps (8, 10, 12) is step 8.
    assert sorted(os.listdir(tmp_path)) == ["best-000000000008.npz",
                                            "best-000000000008.npz.sha256",
                                            "best_state.json", "best_state.json.sha256"]
    state = json.loads((tmp_path / "best_state.json").read_text())
    assert state["history"] == [[2 * (i + 1), v] for i, v in enumerate(VALUES)]

    # After epoch 2 (step 6), a run may resume at steps 2, 4 or 6: the best as of each is
    # step 2, 4 and 4.
    early = tmp_path / "early"
    _fit(_model(), [FakeValidation(VALUES), BestCheckpoint("val_score", state_dir=early)],
         epochs=3)
    assert sorted(name for name in os.listdir(early) if name.endswith(".npz")) == [
        "best-000000000002.npz", "best-000000000004.npz"]


def _at_step(model, step):
    """`model` as a checkpoint restores it: its optimizer at `step`."""
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(step)
    return model


@pytest.mark.parametrize("resume_epoch", [2, 4])
def test_a_resumed_run_ends_with_the_same_best_checkpoint(tmp_path, resume_epoch):
    reference = BestCheckpoint("val_score")
    validation = FakeValidation(VALUES)
    model = _model()
    initial = model.get_weights()
    _fit(model, [validation, reference], epochs=len(VALUES))

    # A run killed after `resume_epoch + 1` epochs, before the checkpoint of the last: its
    # state holds the value of an epoch the rerun (from the checkpoint before) recomputes.
    killed = _model()
    killed.set_weights(initial)
    state_dir = tmp_path / "best"
    _fit(killed, [FakeValidation(VALUES), BestCheckpoint("val_score", state_dir=state_dir)],
         epochs=resume_epoch + 1)
    step = STEPS_PER_EPOCH * resume_epoch
    resumed = _model()
    resumed.set_weights(validation.weights[step])
    best, rerun = BestCheckpoint("val_score", state_dir=state_dir), FakeValidation(VALUES)
    assert best.damaged_snapshots(step) == []
    _fit(_at_step(resumed, step), [rerun, best], epochs=len(VALUES), initial_epoch=resume_epoch)
    assert best.history == reference.history  # each epoch once
    assert best.best_step == reference.best_step == 8
    best.apply_to(resumed)
    # Step 8: read back from the state when the rerun starts after it, else the rerun's.
    _assert_same(resumed.get_weights(), (validation if step >= 8 else rerun).weights[8])


def test_damaged_best_weights_are_reported(tmp_path):
    _fit(_model(), [FakeValidation(VALUES), BestCheckpoint("val_score", state_dir=tmp_path)],
         epochs=len(VALUES))
    path = tmp_path / "best-000000000008.npz"
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    best = BestCheckpoint("val_score", state_dir=tmp_path)
    ((step, error),) = best.damaged_snapshots(12)
    assert step == 8 and str(path) in error and "SHA-256" in error
    assert best.damaged_snapshots(0) == []  # nothing recorded yet at step 0
    os.remove(path)
    ((step, error),) = best.damaged_snapshots(12)
    assert "missing" in error
    # A run that resumes anyway stops with the file's name.
    with pytest.raises(FileNotFoundError, match="best-000000000008.npz"):
        _fit(_at_step(_model(), 12), [BestCheckpoint("val_score", state_dir=tmp_path)],
             epochs=len(VALUES), initial_epoch=len(VALUES))
    (tmp_path / "best_state.json").write_text("{")
    with pytest.raises(DamagedFileError, match="best_state.json is damaged"):
        BestCheckpoint("val_score", state_dir=tmp_path).damaged_snapshots(12)
