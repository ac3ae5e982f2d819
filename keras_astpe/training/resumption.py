"""Exact resumption: a run killed at any point (even by SIGKILL) and rerun ends as if never
stopped, and a damaged file is never loaded silently.

- An epoch of `fit` is one checkpoint interval. Everything random in interval `k` (data
  order, crops, SpecAugment, dropout) is seeded from `(seed, k)` (`derive_seed`,
  `interval_dataset`, `DropoutReseed`), so a run restarted from the checkpoint of interval
  `k` trains on the very batches, with the very dropout masks, of an uninterrupted run
  (bit-identical on CPU on the three backends; GPU kernels may add float noise).
- `IntervalCheckpoint` writes model + optimizer state atomically with a SHA-256 digest;
  `restore_latest` verifies it and falls back to the newest intact checkpoint, saying so.
- `RunConfig`: a resumed run must be the same run.
"""

import csv
import hashlib
import json
import os
import re

import keras
import numpy as np

from keras_astpe.io_utils import atomic_path, atomic_write_text, write_json

_CHECKPOINT_RE = re.compile(r"^ckpt-(\d{12})\.weights\.h5$")
_DIGEST_SUFFIX = ".sha256"


class DamagedFileError(ValueError):
    """A checkpoint or snapshot whose content is not what was written."""


class RunMismatchError(ValueError):
    """A run folder holds a run with other settings than the ones given."""


def derive_seed(seed, *keys):
    """A seed in [1, 2**30) from `seed` and integer `keys` (e.g. interval, purpose)."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0]
    return 1 + int(state) % (2**30 - 1)


def interval_dataset(make_interval, start, stop, steps):
    """Batches of checkpoint intervals `start .. stop - 1`, `steps` batches each.

    `make_interval(k)` returns the (repeated) dataset of interval `k`, seeded from `k`;
    the result concatenates the first `steps` batches of each, so that a run resumed at
    interval `start` sees the batches an uninterrupted run sees from there, without
    reading (or decoding) the data of the intervals before.

    Within an interval the data are shuffled and read once before any clip repeats; a new
    interval starts a new shuffle, so over a whole run clips are drawn in pieces of
    `steps` batches rather than whole passes over the data.
    """
    if not 0 <= start < stop:
        raise ValueError(f"need 0 <= start < stop, got start={start}, stop={stop}")
    dataset = None
    for k in range(start, stop):
        piece = make_interval(k).take(steps)
        dataset = piece if dataset is None else dataset.concatenate(piece)
    return dataset


def seed_generator_states(model):
    """The state variables of the model's seed generators (dropout), in a fixed order."""
    return [variable for variable in model.non_trainable_variables
            if variable.path.rsplit("/", 1)[-1] == "seed_generator_state"]


class DropoutReseed(keras.callbacks.Callback):
    """Re-seeds the random state of dropout at each epoch's first batch, from `(seed, epoch)`.

    Keras does not save the state of the seed generators in checkpoints, and on PyTorch
    unseeded `Dropout` layers draw from torch's global generator. Seeding every
    `keras.random.SeedGenerator` of the model (and, on PyTorch, the global generator) from
    `(seed, epoch)` makes the dropout masks of an epoch the same in a resumed run as in an
    uninterrupted one. It happens at the first batch rather than at the epoch start because
    on PyTorch, creating the data iterator (at the first epoch of a `fit`) draws from the
    global generator.

    With a `distribution` (`keras_astpe.training.distribution`) whose replicas each keep a
    copy of the state (tf.distribute), replica `r > 0` is seeded from `(seed, epoch, r)`:
    Keras would otherwise draw the same masks on every replica.
    """

    def __init__(self, seed, distribution=None):
        super().__init__()
        self.seed = int(seed)
        self.distribution = distribution
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch is None:
            return
        epoch, self._epoch = self._epoch, None
        for index, state in enumerate(seed_generator_states(self.model)):
            dtype = keras.backend.standardize_dtype(state.dtype)

            def value_of(replica, index=index, dtype=dtype):
                keys = (0, epoch, index) + ((replica,) if replica else ())
                return np.array([derive_seed(self.seed, *keys), 0]).astype(dtype)

            if self.distribution is None:
                state.assign(value_of(0))
            else:
                self.distribution.assign_per_replica(state, value_of)
        if keras.backend.backend() == "torch":
            import torch

            torch.manual_seed(derive_seed(self.seed, 1, epoch))


# ---------------------------------------------------------------------------------------
# Verified files
# ---------------------------------------------------------------------------------------


def file_digest(path):
    """SHA-256 hex digest and size of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def write_digest(path, digest_path=None):
    """Records the SHA-256 and size of `path` in `<path>.sha256` (or `digest_path`)."""
    digest, size = file_digest(path)
    atomic_write_text(digest_path or path + _DIGEST_SUFFIX, f"{digest} {size}\n")
    return digest, size


def verify_file(path, expected=None):
    """Raises `DamagedFileError` naming `path` unless it matches its recorded digest.

    `expected`: `(sha256, size)`; None reads `<path>.sha256`, which every checkpoint has
    before it gets its final name.
    """
    if expected is None:
        record = path + _DIGEST_SUFFIX
        if not os.path.exists(record):
            raise DamagedFileError(f"{path} has no digest record ({record} is missing)")
        with open(record, encoding="utf-8") as f:
            fields = f.read().split()
        if len(fields) != 2:
            raise DamagedFileError(f"{record}: unreadable digest record")
        expected = (fields[0], int(fields[1]))
    digest, size = file_digest(path)
    if size != expected[1]:
        raise DamagedFileError(f"{path} is damaged: {size} bytes, but {expected[1]} were "
                               "written (truncated or appended to)")
    if digest != expected[0]:
        raise DamagedFileError(f"{path} is damaged: its content changed after it was written "
                               "(SHA-256 mismatch)")


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def checkpoint_name(step):
    return f"ckpt-{step:012d}.weights.h5"


def list_checkpoints(directory):
    """`[(step, path)]` of the checkpoints in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    steps = [int(m.group(1)) for m in map(_CHECKPOINT_RE.match, os.listdir(directory)) if m]
    return [(step, os.path.join(directory, checkpoint_name(step)))
            for step in sorted(steps, reverse=True)]


def restore_checkpoint(model, path):
    """Verifies and loads model and optimizer state (written by `IntervalCheckpoint`).

    The model must be compiled with the optimizer it was trained with. Returns the
    optimizer step of the checkpoint; raises `DamagedFileError` naming a damaged file.
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("restore_checkpoint needs a compiled model (for the optimizer).")
    verify_file(path)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        raise DamagedFileError(f"{path} cannot be loaded: {error}") from error
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def restore_latest(model, directory, *, before=None, log=print):
    """Restores the newest intact checkpoint of `directory` (older than step `before`, if
    given) into the compiled `model`.

    A damaged checkpoint is reported by name (through `log`) and skipped: the run goes on
    from the newest intact one. Returns `(step, damaged)`: the step restored (0 when no
    intact checkpoint is left: the caller starts over, with a freshly built model, since a
    failed load may have changed some weights) and the errors of the damaged checkpoints.
    """
    damaged = []
    for step, path in list_checkpoints(directory):
        if before is not None and step >= before:
            continue
        try:
            restored = restore_checkpoint(model, path)
        except DamagedFileError as error:
            damaged.append(str(error))
        else:
            if restored == step:
                if damaged:
                    log(f"Falling back to the newest intact checkpoint, {path}.")
                return step, damaged
            damaged.append(f"{path} holds optimizer step {restored}, not {step}")
        log(f"Warning: {damaged[-1]}.")
    return 0, damaged


class IntervalCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state at the end of every epoch (= checkpoint interval).

    Files are `<directory>/ckpt-<step>.weights.h5`, `step` the optimizer step, written
    under a temporary name and renamed after their SHA-256 and size are recorded in
    `<file>.sha256`, so a killed process never leaves a partial checkpoint that looks
    complete, and a checkpoint damaged later is caught on loading. The newest `keep`
    checkpoints are kept (2: one to fall back to). Place this callback after the loggers
    (`CSVLogger`): a checkpoint then implies that its epoch was logged.
    """

    def __init__(self, directory, keep=2):
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.fspath(directory)
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        path = os.path.join(self.directory, checkpoint_name(step))
        with atomic_path(path) as tmp:
            self.model.save_weights(tmp, overwrite=True)
            write_digest(tmp, path + _DIGEST_SUFFIX)
        for _, old in list_checkpoints(self.directory)[self.keep:]:
            for stale in (old, old + _DIGEST_SUFFIX):
                if os.path.exists(stale):
                    os.remove(stale)


# ---------------------------------------------------------------------------------------
# Run identity and logs
# ---------------------------------------------------------------------------------------


class RunConfig:
    """The settings that define a run, stored as `<run_dir>/run_config.json`.

    `check_or_write` writes them at the first start; a restart must present the same
    settings, else resuming would silently mix two runs. `record_start` appends to the
    file's `starts` list how each start ran (e.g. on how many devices), which is not
    compared: a setting that does not change the run (the number of replicas, under
    global-batch semantics) may change between starts, and the file says when it did.
    """

    FILENAME = "run_config.json"
    STARTS = "starts"

    @staticmethod
    def _read(path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as error:
            raise RunMismatchError(f"{path} is unreadable ({error}): delete it to start the "
                                   "run over, or choose another --output_dir") from None

    @staticmethod
    def check_or_write(run_dir, config):
        path = os.path.join(run_dir, RunConfig.FILENAME)
        config = json.loads(json.dumps(config))  # tuples -> lists, as stored
        if not os.path.exists(path):
            write_json(path, config)
            return
        stored = RunConfig._read(path)
        stored.pop(RunConfig.STARTS, None)
        differences = {key: (stored.get(key), config.get(key))
                       for key in sorted(set(stored) | set(config))
                       if stored.get(key) != config.get(key)}
        if differences:
            listing = "; ".join(f"{key}: {old!r} -> {new!r}"
                                for key, (old, new) in differences.items())
            raise RunMismatchError(
                f"{run_dir} holds a run with other settings ({listing}). Rerun with the "
                "same settings to resume it, or choose another --output_dir.")

    @staticmethod
    def record_start(run_dir, start):
        """Appends `start` (a JSON-able dict) to the `starts` of `run_config.json`."""
        path = os.path.join(run_dir, RunConfig.FILENAME)
        stored = RunConfig._read(path)
        stored[RunConfig.STARTS] = [*stored.get(RunConfig.STARTS, []),
                                    json.loads(json.dumps(start))]
        write_json(path, stored)


def truncate_training_log(path, num_epochs):
    """Keeps the rows of epochs `< num_epochs` of a `CSVLogger` file (before resuming).

    A run killed after logging an epoch but before its checkpoint repeats that epoch; this
    drops the row it would otherwise log twice.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    epoch = rows[0].index("epoch")
    kept = [row for row in rows[1:] if row and int(float(row[epoch])) < num_epochs]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *kept])
