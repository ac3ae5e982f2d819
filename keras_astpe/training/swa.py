"""Stochastic weight averaging over periodic snapshots (SPEC section 5).

The paper's final model is the average of the last 10 checkpoints, saved every 10k steps.
`StochasticWeightAveraging` keeps those snapshots (numpy copies, so it works on every
backend) and, with a `state_dir`, stores them as verified files
(`keras_astpe.training.run_store.WeightSnapshots`), so that a run resumed after a crash ends
with the same averaged weights as an uninterrupted one.
"""

import logging
import warnings

import keras
import numpy as np

from keras_astpe.training.run_store import DamagedFileError, WeightSnapshots

logger = logging.getLogger(__name__)


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
    each snapshot is stored there as a verified file (`snapshot-<step>.npz`) and those a run
    resumed at optimizer step `r` averages (the last `num_snapshots` multiples of
    `snapshot_every` up to `r`; with `final_step`, only those the final average needs) are
    read back when training starts (at the first epoch begin, so after any callback that
    restores the model in `on_train_begin`); snapshots of later steps are recomputed.
    `keras.callbacks.BackupAndRestore` does not save callback state: pass `state_dir`
    whenever training can be resumed. A damaged or missing snapshot that is needed raises
    `DamagedFileError` / `FileNotFoundError` naming it (see `damaged_snapshots`); one that
    is not needed blocks nothing.

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
        self.store = None if state_dir is None else WeightSnapshots(state_dir, "snapshot")
        self.final_step = None if final_step is None else int(final_step)
        self.apply_at_end = bool(apply_at_end)
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

    def _needed(self, step):
        """`{multiple of snapshot_every: stored step}` of the snapshots a run resumed at
        optimizer step `step` averages (a snapshot is taken at the first step at or after
        each multiple); a multiple with no stored snapshot maps to None."""
        first = 0 if self.final_step is None else (
            self.final_step - (self.num_snapshots - 1) * self.snapshot_every)
        every = self.snapshot_every
        multiples = [m for m in range(every, step + 1, every) if m >= first]
        stored = {s // every * every: s for s in self.store.steps() if s <= step}
        return {m: stored.get(m) for m in multiples[-self.num_snapshots:]}

    def damaged_snapshots(self, step):
        """`[(snapshot step, error)]` of the stored snapshots a run resumed at optimizer step
        `step` needs that are damaged or missing (checked once; nothing is loaded)."""
        if self.store is None:
            return []
        damaged = []
        for multiple, stored in self._needed(step).items():
            try:
                if stored is None:
                    raise FileNotFoundError(f"{self.store.path(multiple)} is missing")
                self.store.check(stored)
            except (DamagedFileError, FileNotFoundError) as error:
                damaged.append((multiple if stored is None else stored, str(error)))
        return damaged

    def _setup(self, step):
        if not self._steps and self.store is not None:
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
        if self.store is not None:
            self._persist(step, weights)

    def _persist(self, step, weights):
        """Stores the snapshot of `step`; keeps those a resumption from this checkpoint or
        the one before needs, drops the others (and those a killed run left past `step`)."""
        self.store.save(step, weights)
        self.store.keep_only([s for s in self.store.steps() if s <= step]
                             [-(self.num_snapshots + 1):])

    def _restore(self, step):
        needed = self._needed(step)
        if not needed:
            return
        missing = [m for m, stored in needed.items() if stored is None]
        if missing:
            raise FileNotFoundError(f"{self.store.path(missing[0])} is missing")
        references = self.model.get_weights()
        steps = list(needed.values())
        self._steps = steps
        self._snapshots = [self.store.load(s, references) for s in steps]
        logger.info("SWA: restored snapshots at steps %s from %s.", steps,
                    self.store.directory)
