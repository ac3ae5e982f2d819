"""The run folder: what a run is, and every file a resumed run reads back, verified.

A run folder holds:

- `run_config.json`: the settings that define the run (`RunStore.open` refuses a start with
  other settings, which would silently mix two runs) and how each start ran;
- `checkpoints/ckpt-<step>.weights.h5`: model + optimizer state at the end of each
  checkpoint interval (Keras' weights file: it carries the optimizer's state);
- `<kind>/<kind>-<step>.npz`: weight snapshots (`swa/`: those SWA averages; `best/`: the
  best checkpoint on the validation split), numpy archives of `model.get_weights()`;
- `training_log.csv`, cut back to the resumed interval.

One digest scheme covers every file a rerun reads: it is written under a temporary name,
its SHA-256 and size are recorded in `<file>.sha256`, and only then does it get its name;
it is checked before it is loaded. A killed process never leaves a partial file that looks
complete, and a file damaged later raises `DamagedFileError` naming it, never loads.
"""

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tempfile

import keras
import numpy as np

from keras_astpe.io_utils import atomic_path, atomic_write_text, write_json

DIGEST_SUFFIX = ".sha256"
_CHECKPOINT_RE = re.compile(r"^ckpt-(\d{12})\.weights\.h5$")


class DamagedFileError(ValueError):
    """A checkpoint, snapshot or state file whose content is not what was written."""


class RunMismatchError(ValueError):
    """A run folder holds a run with other settings than the ones given."""


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


@contextlib.contextmanager
def verified_path(path):
    """Yields a temporary path next to `path`; once written, its digest is recorded in
    `<path>.sha256` and it becomes `path` (nothing changes on an exception)."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        yield tmp
        digest, size = file_digest(tmp)
        atomic_write_text(path + DIGEST_SUFFIX, f"{digest} {size}\n")


def verify_file(path):
    """Raises `DamagedFileError` naming `path` unless it matches `<path>.sha256`
    (`FileNotFoundError` when `path` itself is missing)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing")
    record = path + DIGEST_SUFFIX
    if not os.path.exists(record):
        raise DamagedFileError(f"{path} has no digest record ({record} is missing)")
    with open(record, encoding="utf-8") as f:
        fields = f.read().split()
    if len(fields) != 2 or not fields[1].isdigit():
        raise DamagedFileError(f"{record}: unreadable digest record")
    digest, size = file_digest(path)
    if size != int(fields[1]):
        raise DamagedFileError(f"{path} is damaged: {size} bytes, but {fields[1]} were "
                               "written (truncated or appended to)")
    if digest != fields[0]:
        raise DamagedFileError(f"{path} is damaged: its content changed after it was written "
                               "(SHA-256 mismatch)")


def remove_verified(path):
    """Removes `path` and its digest record, where they exist."""
    for name in (path, path + DIGEST_SUFFIX):
        if os.path.exists(name):
            os.remove(name)


def write_verified_json(path, content):
    with verified_path(path) as tmp:
        write_json(tmp, content)


def read_verified_json(path):
    """The content of a verified JSON file, or None when there is none."""
    if not os.path.exists(path):
        return None
    verify_file(path)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class WeightSnapshots:
    """Verified numpy archives of a model's weights, one per optimizer step:
    `<directory>/<prefix>-<step>.npz`."""

    def __init__(self, directory, prefix):
        self.directory = os.fspath(directory)
        self.prefix = prefix
        self._pattern = re.compile(rf"^{re.escape(prefix)}-(\d{{12}})\.npz$")
        self._verified = set()

    def path(self, step):
        return os.path.join(self.directory, f"{self.prefix}-{int(step):012d}.npz")

    def steps(self):
        """Steps of the snapshots on disk, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(m.group(1)) for m in map(self._pattern.match,
                                                   os.listdir(self.directory)) if m)

    def save(self, step, weights):
        with verified_path(self.path(step)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"w{i:05d}": w for i, w in enumerate(weights)})
        self._verified.add(step)

    def check(self, step):
        """Raises `DamagedFileError` / `FileNotFoundError` naming a damaged or missing
        snapshot (each checked once)."""
        if step not in self._verified:
            verify_file(self.path(step))
            self._verified.add(step)

    def load(self, step, references):
        """The weights of `step`, checked against the model's `references` (its
        `get_weights()`): same count, shapes and dtypes."""
        self.check(step)
        path = self.path(step)
        with np.load(path) as data:
            if len(data.files) != len(references):
                raise ValueError(f"{path} holds {len(data.files)} weight arrays, but the model "
                                 f"has {len(references)}: it belongs to another model")
            weights = []
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

    def keep_only(self, steps):
        """Deletes the snapshots of other steps (and leftovers of killed writes)."""
        steps = set(steps)
        for step in self.steps():
            if step not in steps:
                remove_verified(self.path(step))
                self._verified.discard(step)
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith(".tmp-"):
                    os.remove(os.path.join(self.directory, name))


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
    try:
        verify_file(path)
    except FileNotFoundError as error:
        raise DamagedFileError(str(error)) from None
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
    """Saves model + optimizer state, verified, at the end of every epoch (= checkpoint
    interval) as `<directory>/ckpt-<step>.weights.h5`, `step` the optimizer step.

    The newest `keep` checkpoints are kept (2: one to fall back to). Place this callback
    after the loggers (`CSVLogger`): a checkpoint then implies that its epoch was logged.
    """

    def __init__(self, directory, keep=2):
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.fspath(directory)
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        with verified_path(os.path.join(self.directory, checkpoint_name(step))) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        for _, old in list_checkpoints(self.directory)[self.keep:]:
            remove_verified(old)


# ---------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------


class RunStore:
    """The folder of one run: its identity, checkpoints, weight snapshots and log.

    Only the chief of a distributed run writes here; the other workers run the same
    callbacks (under tf.distribute saving may be a collective) on `scratch()`.
    """

    CONFIG = "run_config.json"
    LOG = "training_log.csv"
    STARTS = "starts"

    def __init__(self, run_dir):
        self.dir = os.fspath(run_dir)

    @property
    def checkpoints(self):
        return os.path.join(self.dir, "checkpoints")

    def snapshots(self, kind):
        """The weight snapshots of `kind` (`"swa"`, `"best"`)."""
        return WeightSnapshots(os.path.join(self.dir, kind), kind)

    def open(self, identity):
        """Records the settings that define the run at its first start; a restart must
        present the same settings (`RunMismatchError` listing the differences)."""
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, self.CONFIG)
        identity = json.loads(json.dumps(identity))  # tuples -> lists, as stored
        if not os.path.exists(path):
            write_json(path, identity)
            return
        stored = self._read_config()
        stored.pop(self.STARTS, None)
        differences = {key: (stored.get(key), identity.get(key))
                       for key in sorted(set(stored) | set(identity))
                       if stored.get(key) != identity.get(key)}
        if differences:
            listing = "; ".join(f"{key}: {old!r} -> {new!r}"
                                for key, (old, new) in differences.items())
            raise RunMismatchError(
                f"{self.dir} holds a run with other settings ({listing}). Rerun with the "
                "same settings to resume it, or choose another --output_dir.")

    def record_start(self, start):
        """Appends how this start ran (a JSON-able dict: step, devices, ...) to the run's
        `starts`, which are not compared: the number of replicas, say, may change between
        starts without changing the run."""
        stored = self._read_config()
        stored[self.STARTS] = [*stored.get(self.STARTS, []), json.loads(json.dumps(start))]
        write_json(os.path.join(self.dir, self.CONFIG), stored)

    def _read_config(self):
        path = os.path.join(self.dir, self.CONFIG)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as error:
            raise RunMismatchError(f"{path} is unreadable ({error}): delete it to start the "
                                   "run over, or choose another --output_dir") from None

    def truncate_log(self, num_epochs):
        """Keeps the rows of epochs `< num_epochs` of the `CSVLogger` file: a run killed
        after logging an epoch but before its checkpoint repeats that epoch."""
        path = os.path.join(self.dir, self.LOG)
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

    @staticmethod
    @contextlib.contextmanager
    def scratch():
        """A temporary folder for a worker's writes, removed at the end."""
        directory = tempfile.mkdtemp(prefix="keras_astpe-worker-")
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)
