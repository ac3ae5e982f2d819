"""Model selection on a validation split: the best checkpoint, kept so that it survives a kill.

`BestCheckpoint` records the validation value of every checkpoint interval (`val_accuracy`
for single-label data, `val_mAP` multi-label) and keeps the weights of the best one; the
final model is that checkpoint instead of the last one or an average (SWA). Like the SWA
snapshots (`keras_astpe.training.swa`), its state is written atomically with the SHA-256 of
every weights file, so that a run killed at any point and rerun (`keras_astpe.training.
resumption`) ends with the very checkpoint an uninterrupted run selects, and a damaged file
is never loaded silently.
"""

import json
import os
import re
import warnings

import keras
import numpy as np

from keras_astpe.io_utils import atomic_path, write_json
from keras_astpe.training.resumption import DamagedFileError, file_digest, verify_file

_STATE_FILE = "best_state.json"
_WEIGHTS_RE = re.compile(r"^best-(\d+)\.npz$")
_FORMAT_VERSION = 1


def _weights_file(step):
    return f"best-{step:012d}.npz"


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

    With `state_dir`, the history of values and the best weights are written there at
    every epoch end (weights as `.npz` with their SHA-256 and size in the state) and read
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
        new_digest = None
        if best is not None and best[0] == step:
            weights = [np.array(w, copy=True) for w in self.model.get_weights()]
            self._best = (step, value, weights)
            if self.state_dir is not None:
                new_digest = self._write_weights(step, weights)
        if self.state_dir is not None:
            self._write_state(new_digest)

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
            self._verify(state, best[0])
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
            self._best = (*best, self._load(state, best[0]))

    def _read_state(self):
        if self.state_dir is None:
            return None
        path = os.path.join(self.state_dir, _STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except ValueError as error:
            raise DamagedFileError(f"{path} is damaged ({error}): delete the folder "
                                   f"{self.state_dir} and the checkpoints to start over") from None
        if state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"Unsupported best-checkpoint state format in {path}")
        return state

    def _verify(self, state, step):
        path = os.path.join(self.state_dir, _weights_file(step))
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing (the best checkpoint in the state)")
        digest = state["digests"].get(str(step))
        if digest is None:
            raise DamagedFileError(f"{path} has no digest in the best-checkpoint state")
        verify_file(path, tuple(digest))
        return path

    def _load(self, state, step):
        path = self._verify(state, step)
        references = self.model.get_weights()
        weights = []
        with np.load(path) as data:
            if len(data.files) != len(references):
                raise ValueError(f"{path} holds {len(data.files)} weight arrays, but the model "
                                 f"has {len(references)}: it belongs to another model")
            for i, reference in enumerate(references):
                array = data[f"w{i:05d}"]
                if array.dtype.kind == "V":  # numpy stores bfloat16 & co. as raw bytes
                    array = array.view(reference.dtype)
                if array.shape != reference.shape or array.dtype != reference.dtype:
                    raise ValueError(f"{path}: weight {i} is {array.dtype}{list(array.shape)}, "
                                     f"but the model's is {reference.dtype}"
                                     f"{list(reference.shape)}")
                weights.append(array)
        return weights

    def _write_weights(self, step, weights):
        path = os.path.join(self.state_dir, _weights_file(step))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"w{i:05d}": w for i, w in enumerate(weights)})
            digest = file_digest(tmp)
        return step, list(digest)

    def _write_state(self, new_digest=None):
        """Writes the history and the digests of the weights still needed (with
        `new_digest`, `(step, digest)` of weights just written), then deletes the weights
        files no resumable step needs."""
        digests = dict((self._read_state() or {"digests": {}})["digests"])
        if new_digest is not None:
            digests[str(new_digest[0])] = new_digest[1]
        needed = set()
        for end in range(max(0, len(self._history) - self.keep), len(self._history)):
            best = best_of(self._history[:end + 1])
            if best is not None:
                needed.add(best[0])
        write_json(os.path.join(self.state_dir, _STATE_FILE), {
            "format_version": _FORMAT_VERSION,
            "monitor": self.monitor,
            "history": [[s, v] for s, v in self._history],
            "digests": {key: value for key, value in digests.items() if int(key) in needed},
        })
        kept = {_weights_file(s) for s in needed}
        for name in os.listdir(self.state_dir):
            if (_WEIGHTS_RE.match(name) and name not in kept) or name.startswith(".tmp-"):
                os.remove(os.path.join(self.state_dir, name))
