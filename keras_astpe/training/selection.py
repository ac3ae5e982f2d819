"""Model selection on a validation split: the best checkpoint, kept so that it survives a kill.

`BestCheckpoint` records the validation value of every checkpoint interval (`val_accuracy`
for single-label data, `val_mAP` multi-label) and keeps the weights of the best one; the
final model is that checkpoint instead of the last one or an average (SWA). Like the SWA
snapshots, the values and weights are stored as verified files
(`keras_astpe.training.run_store`), so that a run killed at any point and rerun ends with
the very checkpoint an uninterrupted run selects, and a damaged file is never loaded.
"""

import os
import warnings

import keras
import numpy as np

from keras_astpe.training.run_store import (
    DamagedFileError,
    WeightSnapshots,
    read_verified_json,
    write_verified_json,
)

_STATE_FILE = "best_state.json"


def best_of(history):
    """`(step, value)` of the highest value of `[(step, value)]` (the earliest of equal
    ones; NaN never wins), or None when no value is a number."""
    best = None
    for step, value in history:
        if value is not None and np.isfinite(value) and (best is None or value > best[1]):
            best = (step, value)
    return best


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the checkpoint interval with the highest `monitor` value.

    At every epoch end (one epoch = one checkpoint interval) the value of `monitor` in the
    epoch logs is recorded with the optimizer step; a value above every earlier one makes
    that step's weights (`model.get_weights()`: trainable and non-trainable) the best.
    `apply_to(model)` sets them in a model at the end (and keeps the weights it had in
    `last_weights`, to compare). Place this callback after those that add the validation
    logs and before the checkpoint callback.

    With `state_dir`, the history of values (`best_state.json`) and the best weights
    (`best-<step>.npz`) are written there as verified files at every epoch end and read
    back when training starts, at the first epoch begin (after any callback that restores
    the model in `on_train_begin`). A run resumed at optimizer step `r` drops the values of
    later steps (it recomputes them) and takes the best of those up to `r`. The weights of
    the best as of each of the last `keep` recorded steps are kept, so that a run can resume
    from any checkpoint still on disk: with `IntervalCheckpoint(keep=2)`, the two kept and
    the one being written, `keep=3`.

    Args:
        monitor: the epoch-log key to maximize, e.g. `"val_accuracy"`, `"val_mAP"`.
        state_dir: optional folder where the state is persisted and restored from.
        keep: recorded steps whose best weights stay on disk (>= 1).
    """

    def __init__(self, monitor, state_dir=None, keep=3):
        super().__init__()
        if keep < 1:
            raise ValueError(f"`keep` must be >= 1, got {keep}")
        self.monitor = str(monitor)
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        self.store = None if state_dir is None else WeightSnapshots(state_dir, "best")
        self.keep = int(keep)
        self.last_weights = None  # the model's weights before `apply_to`
        self._history = []
        self._best = None  # (step, value, weights)
        self._needs_setup = True

    @property
    def history(self):
        """`[(step, value)]` of the intervals recorded, oldest first."""
        return tuple(self._history)

    @property
    def best_step(self):
        """Optimizer step of the best checkpoint (None before any)."""
        return None if self._best is None else self._best[0]

    @property
    def best_value(self):
        return None if self._best is None else self._best[1]

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        if self.model.optimizer is None:
            raise ValueError("BestCheckpoint needs a compiled model.")
        self._needs_setup = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._needs_setup:
            self._setup(self._iterations())
            self._needs_setup = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"BestCheckpoint monitors {self.monitor!r}, which the epoch logs "
                             f"do not hold ({sorted(logs)}): validate during training")
        step = self._iterations()
        value = float(keras.ops.convert_to_numpy(logs[self.monitor]))
        self._history.append((step, value))
        best = best_of(self._history)
        if best is not None and best[0] == step:
            weights = [np.array(w, copy=True) for w in self.model.get_weights()]
            self._best = (step, value, weights)
            if self.store is not None:
                self.store.save(step, weights)
        if self.store is not None:
            self._write_state()

    def on_train_end(self, logs=None):
        if self._needs_setup:  # no epoch ran, e.g. a run resumed after its last epoch
            self._setup(self._iterations())
            self._needs_setup = False

    def apply_to(self, model):
        """Keeps `model`'s weights in `last_weights` and sets the best checkpoint's, or
        warns and leaves them when no interval was recorded."""
        self.last_weights = model.get_weights()
        if self._best is None:
            warnings.warn("BestCheckpoint recorded no validation value: the weights are left "
                          "as trained.", stacklevel=2)
            return
        model.set_weights(self._best[2])

    def damaged_snapshots(self, step):
        """`[(best step, error)]` when the stored weights of the best checkpoint as of
        optimizer step `step` are damaged or missing (nothing is loaded)."""
        state = self._read_state()
        if state is None:
            return []
        best = best_of(self._recorded(state, step))
        if best is None:
            return []
        try:
            self.store.check(best[0])
        except (DamagedFileError, FileNotFoundError) as error:
            return [(best[0], str(error))]
        return []

    # -- state --------------------------------------------------------------------------

    @staticmethod
    def _recorded(state, step):
        return [(int(s), value) for s, value in state["history"] if int(s) <= step]

    def _setup(self, step):
        """The state as of optimizer step `step`: read from `state_dir`, else what this
        callback recorded up to `step`."""
        if self.state_dir is not None:
            self._history, self._best = [], None
            self._restore(step)
            return
        self._history = [(s, v) for s, v in self._history if s <= step]
        if self._best is not None and self._best[0] > step:
            raise ValueError(f"BestCheckpoint: training restarts at step {step}, before the "
                             f"best step {self._best[0]}, whose predecessor it did not keep: "
                             "give it a state_dir")

    def _restore(self, step):
        state = self._read_state()
        if state is None:
            return
        if state["monitor"] != self.monitor:
            raise ValueError(f"The best-checkpoint state in {self.state_dir} monitors "
                             f"{state['monitor']!r}, not {self.monitor!r}: use a new folder")
        self._history = self._recorded(state, step)
        best = best_of(self._history)
        if best is not None:
            self._best = (*best, self.store.load(best[0], self.model.get_weights()))

    def _read_state(self):
        if self.state_dir is None:
            return None
        return read_verified_json(os.path.join(self.state_dir, _STATE_FILE))

    def _write_state(self):
        """Writes the history, then deletes the weights files no resumable step needs."""
        needed = set()
        for end in range(max(0, len(self._history) - self.keep), len(self._history)):
            best = best_of(self._history[:end + 1])
            if best is not None:
                needed.add(best[0])
        write_verified_json(os.path.join(self.state_dir, _STATE_FILE), {
            "monitor": self.monitor, "history": [[s, v] for s, v in self._history]})
        self.store.keep_only(needed)
