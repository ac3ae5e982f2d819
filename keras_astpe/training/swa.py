"""Stochastic weight averaging over periodic snapshots (SPEC section 5).

The paper's final model is the average of the last 10 checkpoints, saved every 10k steps.
`StochasticWeightAveraging` keeps those snapshots itself (as numpy copies, so it works on
every backend) and can persist them, so that a run resumed after a crash ends with the same
averaged weights as an uninterrupted one.
"""

import json
import logging
import os
import re
import warnings

import keras
import numpy as np

from keras_astpe.io_utils import atomic_path, write_json
from keras_astpe.training.resumption import DamagedFileError, file_digest, verify_file

logger = logging.getLogger(__name__)

_STATE_FILE = "swa_state.json"
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d+)\.npz$")
_FORMAT_VERSION = 2


def _snapshot_file(step):
    return f"snapshot-{step:012d}.npz"


def _is_float(array):
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(array.dtype))


def average_weights(snapshots):
    """Averages lists of weight arrays (e.g. several `model.get_weights()` results).

    Float arrays are averaged in float64 and cast back to their dtype; integer and other
    non-float arrays (counters, seeds) are taken from the last snapshot.

    Args:
        snapshots: non-empty sequence of equally structured lists of numpy arrays.

    Returns:
        A list of numpy arrays, in the order of the snapshots' arrays.
    """
    if not snapshots:
        raise ValueError("`snapshots` is empty: there is nothing to average.")
    last = snapshots[-1]
    for index, snapshot in enumerate(snapshots):
        if len(snapshot) != len(last) or any(
            a.shape != b.shape for a, b in zip(snapshot, last, strict=True)
        ):
            raise ValueError(
                f"Snapshot {index} does not have the structure of the last snapshot "
                f"(shapes {[a.shape for a in snapshot]} vs {[b.shape for b in last]})."
            )
    averaged = []
    for i, reference in enumerate(last):
        if not _is_float(reference):
            averaged.append(np.array(reference))
            continue
        total = np.zeros(reference.shape, dtype=np.float64)
        for snapshot in snapshots:
            total += snapshot[i].astype(np.float64)
        averaged.append((total / len(snapshots)).astype(reference.dtype))
    return averaged


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the last `num_snapshots` weight snapshots into the model at training end.

    Every time the optimizer's `iterations` reaches a multiple of `snapshot_every`, a numpy
    copy of `model.get_weights()` (trainable and non-trainable weights) is kept; only the
    last `num_snapshots` are retained. At `on_train_end` the model's weights are replaced by
    their average (float weights averaged, non-float weights taken from the last snapshot).
    If fewer snapshots than asked exist, those are averaged and a warning is logged; with
    none, the weights are left untouched and a `UserWarning` is issued.

    Steps come from `optimizer.iterations`, so a resumed run (model and optimizer restored
    from a checkpoint) snapshots at the same steps as an uninterrupted one. With `state_dir`
    the snapshots and their bookkeeping are written there atomically at every snapshot and
    reloaded when training starts (at the first epoch begin, so after any callback that
    restores the model in `on_train_begin`); snapshots newer than the restored optimizer
    step are discarded, since the resumed run recomputes them.
    `keras.callbacks.BackupAndRestore` does not save callback state: pass `state_dir`
    whenever training can be resumed. Each snapshot's SHA-256 and size are kept in the state
    and checked when it is loaded: a damaged snapshot raises `DamagedFileError` naming it
    (see `damaged_snapshots`), and only the snapshots the final average still needs are
    read (with `final_step`, those of the last `num_snapshots` multiples of
    `snapshot_every` up to it), so a damaged one it does not need blocks nothing.

    Use one `fit()` call per training run: the averaged weights replace the trained ones at
    its end (`last_weights` keeps those of the last snapshot, to compare); with
    `apply_at_end=False` they are left, for `apply_average(model)` to set them in another
    model (e.g. a copy of a distributed model on one device). With
    `steps_per_execution > 1`, a snapshot is taken at the first execution
    boundary at or after each multiple of `snapshot_every`. Host memory and disk use are
    `num_snapshots` copies of the weights (about 350 MB each for the paper's model).

    Args:
        snapshot_every: optimizer steps between snapshots (paper: 10000).
        num_snapshots: number of most recent snapshots averaged (paper: 10).
        state_dir: optional directory where the state is persisted and restored from.
        final_step: the step training ends at, if known (limits what a restore reads).
        apply_at_end: set the model's weights to the average when training ends.
    """

    def __init__(self, snapshot_every, num_snapshots=10, state_dir=None, final_step=None,
                 apply_at_end=True):
        super().__init__()
        for name, value in (("snapshot_every", snapshot_every), ("num_snapshots", num_snapshots)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value}")
        self.snapshot_every = int(snapshot_every)
        self.num_snapshots = int(num_snapshots)
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        self.final_step = None if final_step is None else int(final_step)
        self.apply_at_end = bool(apply_at_end)
        self._verified = set()
        self.last_weights = None  # the weights before averaging, once training ended
        self._steps = []
        self._snapshots = []
        self._next_step = self.snapshot_every
        self._anchor = (0, -1)
        self._needs_setup = True

    @property
    def snapshot_steps(self):
        """Optimizer steps of the snapshots currently kept, oldest first."""
        return tuple(self._steps)

    def averaged_weights(self):
        """Returns the average of the kept snapshots as a list of numpy arrays."""
        if not self._snapshots:
            raise ValueError("No snapshot has been taken yet: there is nothing to average.")
        return average_weights(self._snapshots)

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        if self.model.optimizer is None:
            raise ValueError("StochasticWeightAveraging needs a compiled model.")
        # The state is set up at the first epoch begin: by then every callback's
        # `on_train_begin` has run, including restores such as BackupAndRestore's.
        self._needs_setup = True

    def on_epoch_begin(self, epoch, logs=None):
        step = self._iterations()
        if self._needs_setup:
            self._setup(step)
            self._needs_setup = False
        self._anchor = (step, -1)

    def _needed(self, steps, step):
        """The stored snapshot steps a run resumed at `step` still averages."""
        first = 0 if self.final_step is None else (
            self.final_step - (self.num_snapshots - 1) * self.snapshot_every)
        return [s for s in steps if first <= s <= step][-self.num_snapshots:]

    def damaged_snapshots(self, step):
        """`[(snapshot step, error)]` of the stored snapshots a run resumed at optimizer step
        `step` needs that are damaged or missing (checked once; nothing is loaded)."""
        state = self._read_state()
        if state is None:
            return []
        damaged = []
        for snapshot_step in self._needed(state["steps"], step):
            path = os.path.join(self.state_dir, _snapshot_file(snapshot_step))
            try:
                self._verify(path, state, snapshot_step)
            except (DamagedFileError, FileNotFoundError) as error:
                damaged.append((snapshot_step, str(error)))
        return damaged

    def _verify(self, path, state, snapshot_step):
        if path in self._verified:
            return
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing (listed in the SWA state)")
        digest = state["digests"].get(str(snapshot_step))
        if digest is None:
            raise DamagedFileError(f"{path} has no digest in the SWA state")
        verify_file(path, tuple(digest))
        self._verified.add(path)

    def _setup(self, step):
        if not self._steps and self.state_dir is not None:
            self._restore(step)
        stale = [s for s in self._steps if s > step]
        if stale:
            logger.info(
                "SWA: dropping snapshots at steps %s, newer than the optimizer step %d.",
                stale,
                step,
            )
            keep = len(self._steps) - len(stale)
            self._steps, self._snapshots = self._steps[:keep], self._snapshots[:keep]
        self._next_step = (step // self.snapshot_every + 1) * self.snapshot_every

    def on_train_batch_end(self, batch, logs=None):
        # `iterations` grows by at most one per batch, so this bound (no device sync) tells
        # whether a snapshot may be due; `batch` is the index of the batch within the epoch.
        anchor_step, anchor_batch = self._anchor
        if anchor_step + batch - anchor_batch < self._next_step:
            return
        step = self._iterations()
        self._anchor = (step, batch)
        if step >= self._next_step:
            self._snapshot(step)
            self._next_step = (step // self.snapshot_every + 1) * self.snapshot_every

    def on_train_end(self, logs=None):
        if self._needs_setup:  # no epoch ran, e.g. a run resumed after its last epoch
            self._setup(self._iterations())
            self._needs_setup = False
        if self.apply_at_end:
            self.apply_average(self.model)

    def apply_average(self, model):
        """Sets `model`'s weights to the average of the kept snapshots (and `last_weights`
        to the last snapshot), or warns and leaves them if there is none."""
        if not self._snapshots:
            warnings.warn(
                "StochasticWeightAveraging took no snapshot (training ran for fewer than "
                f"snapshot_every={self.snapshot_every} steps): the weights are left as trained.",
                stacklevel=2,
            )
            return
        if len(self._snapshots) < self.num_snapshots:
            logger.warning(
                "SWA: averaging %d snapshots (steps %s), fewer than num_snapshots=%d.",
                len(self._snapshots),
                list(self._steps),
                self.num_snapshots,
            )
        self.last_weights = self._snapshots[-1]
        model.set_weights(self.averaged_weights())
        logger.info("SWA: model weights set to the average of steps %s.", list(self._steps))

    def _snapshot(self, step):
        weights = [np.array(w, copy=True) for w in self.model.get_weights()]
        self._steps = [*self._steps, step][-self.num_snapshots :]
        self._snapshots = [*self._snapshots, weights][-self.num_snapshots :]
        logger.info("SWA: snapshot at step %d (kept: %s).", step, list(self._steps))
        if self.state_dir is not None:
            self._persist(step, weights)

    def _persist(self, step, weights):
        path = os.path.join(self.state_dir, _snapshot_file(step))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"w{i:05d}": w for i, w in enumerate(weights)})
            digest = file_digest(tmp)
        previous = self._read_state() or {}
        digests = {key: value for key, value in previous.get("digests", {}).items()
                   if int(key) in self._steps}
        digests[str(step)] = list(digest)
        write_json(os.path.join(self.state_dir, _STATE_FILE), {
            "format_version": _FORMAT_VERSION,
            "snapshot_every": self.snapshot_every,
            "num_weights": len(weights),
            "steps": list(self._steps),
            "digests": digests,
        })
        self._verified.add(path)
        kept = {_snapshot_file(s) for s in self._steps}
        for name in os.listdir(self.state_dir):
            if (_SNAPSHOT_RE.match(name) and name not in kept) or name.startswith(".tmp-"):
                os.remove(os.path.join(self.state_dir, name))

    def _read_state(self):
        """The stored state (checked), or None when there is none."""
        if self.state_dir is None:
            return None
        state_path = os.path.join(self.state_dir, _STATE_FILE)
        if not os.path.exists(state_path):
            return None
        try:
            with open(state_path) as f:
                state = json.load(f)
        except ValueError as error:
            raise DamagedFileError(f"{state_path} is damaged ({error}): delete the folder "
                                   f"{self.state_dir} and the checkpoints to start over") from None
        if state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"Unsupported SWA state format in {state_path}: {state!r}")
        return state

    def _restore(self, step):
        state = self._read_state()
        if state is None:
            return
        if state["snapshot_every"] != self.snapshot_every:
            raise ValueError(
                f"The SWA state in {self.state_dir} was saved with "
                f"snapshot_every={state['snapshot_every']}, but this callback has "
                f"snapshot_every={self.snapshot_every}. Use the same value, or a new state_dir."
            )
        references = self.model.get_weights()
        if state["num_weights"] != len(references):
            raise ValueError(
                f"The SWA state in {self.state_dir} holds {state['num_weights']} weight "
                f"arrays, but the model has {len(references)}: it belongs to another model."
            )
        steps = self._needed(state["steps"], step)
        snapshots = [self._load_snapshot(s, references, state) for s in steps]
        self._steps, self._snapshots = list(steps), snapshots
        logger.info("SWA: restored snapshots at steps %s from %s.", steps, self.state_dir)

    def _load_snapshot(self, step, references, state):
        path = os.path.join(self.state_dir, _snapshot_file(step))
        self._verify(path, state, step)
        weights = []
        with np.load(path) as data:
            for i, reference in enumerate(references):
                array = data[f"w{i:05d}"]
                if array.dtype.kind == "V":  # numpy stores bfloat16 & co. as raw bytes
                    array = array.view(reference.dtype)
                if array.shape != reference.shape or array.dtype != reference.dtype:
                    raise ValueError(
                        f"{path}: weight {i} is {array.dtype}{list(array.shape)}, but the model's "
                        f"is {reference.dtype}{list(reference.shape)}."
                    )
                weights.append(array)
        return weights
