"""Building blocks of the training recipes: data, resumable training, reports.

`recipes/train_audioset.py` and `recipes/eval_esc50.py` are thin command-line wrappers
around `keras_astpe.training.train_audioset` and `evaluate_esc50`; what they share is here:

- data: `prepare_demo_data` (synthetic demo data, generated and converted once),
  `split_files` (the shards of a split, with an error that says how to make them),
  `read_class_names`, `count_clips`, `with_num_clips`, `resolve_stats` (normalization
  statistics, fixed for the life of a run);
- resumable training (SPEC section 5): `interval_dataset` (the data of checkpoint interval
  `k` depend only on the seed and `k`), `DropoutReseed` (dropout masks likewise),
  `build_for_fit` (no hidden extra pass over the data on JAX/PyTorch),
  `IntervalCheckpoint` / `latest_checkpoint` / `restore_checkpoint` (atomic model +
  optimizer checkpoints), `RunConfig` (a resumed run must be the same run);
- reports: `LogLearningRate`, `predict`, `save_inference_model`, `write_json`,
  `truncate_training_log`, `read_training_log`.

Resumption is exact: an epoch of `fit` is one checkpoint interval, a checkpoint is written
at its end, and everything random in interval `k` (data order, crops, SpecAugment, dropout)
is seeded from `(seed, k)`, so a run restarted from the checkpoint of interval `k` trains
on the very batches, with the very dropout masks, of an uninterrupted run (bit-identical
on CPU on the three backends; GPU kernels may add float noise).
"""

import contextlib
import csv
import fcntl
import json
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf

DEMO_DIR = "demo_data"
_CHECKPOINT_RE = re.compile(r"^ckpt-(\d{12})\.weights\.h5$")
_CONVERTERS = {
    "audioset": "python -m tfrecords_tools.audioset --input_dir=<AudioSet folder> "
                "--output_dir={data_dir}",
    "esc50": "python -m tfrecords_tools.esc50 --input_dir=<ESC-50-master> "
             "--output_dir={data_dir}",
}
_CONVERTED_MARKER = ".converted.json"


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def prepare_demo_data(dataset, root=DEMO_DIR, *, size="small", progress=True):
    """Generates the synthetic demo data under `root` (once) and converts `dataset`.

    The audio (`tfrecords_tools.demo.generate_demo`) and the TFRecords of
    `<root>/tfrecords/<dataset>` are made on first use and reused afterwards; a different
    `size` regenerates both.

    Args:
        dataset: `"audioset"` or `"esc50"`.
        root: folder of the demo data.
        size: `"small"` (the recipes' demo) or `"tiny"` (smoke tests).
        progress: show progress bars.

    Returns:
        The folder holding the TFRecords of `dataset`, as `--data_dir` expects it.
    """
    from tfrecords_tools import demo

    if dataset not in _CONVERTERS:
        raise ValueError(f"dataset must be one of {sorted(_CONVERTERS)}, got {dataset!r}")
    output_dir = os.path.join(root, "tfrecords", dataset)
    marker = os.path.join(output_dir, _CONVERTED_MARKER)
    generated = {"seed": 0, "size": size}
    os.makedirs(root, exist_ok=True)
    with _file_lock(os.path.join(root, ".lock")):  # recipes started together share root
        paths = demo.generate_demo(root, seed=0, size=size)
        if os.path.exists(marker):
            with open(marker, encoding="utf-8") as f:
                if json.load(f) == generated:
                    return output_dir
        print(f"Converting the demo {dataset} data to TFRecords in {output_dir}", flush=True)
        if dataset == "audioset":
            from tfrecords_tools.audioset import convert_audioset

            convert_audioset(paths["audioset"], output_dir, overwrite=True, progress=progress)
        else:
            from tfrecords_tools.esc50 import convert_esc50

            convert_esc50(paths["esc50"], output_dir, overwrite=True, progress=progress)
        write_json(marker, generated)
    return output_dir


@contextlib.contextmanager
def _file_lock(path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def split_files(data_dir, split, dataset="audioset"):
    """The shards `<data_dir>/<split>-*-of-*.tfrecord` of a split, sorted.

    Raises a `FileNotFoundError` naming the expected pattern and the converter command that
    writes it (`dataset`: `"audioset"` or `"esc50"`) when there is none.
    """
    pattern = os.path.join(data_dir, f"{split}-[0-9]*-of-[0-9]*.tfrecord")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        where = ("does not exist" if not tf.io.gfile.isdir(data_dir)
                 else "holds no such file")
        raise FileNotFoundError(
            f"No TFRecords of split {split!r}: expected {pattern}, but {data_dir} {where}. "
            "Write them with: " + _CONVERTERS[dataset].format(data_dir=data_dir))
    return files


def count_clips(data_dir, split, files=None, folds=None):
    """Clips of a split: from `<split>-summary.json`, or by reading the records of `files`
    in `folds` (ESC-50 folds are not in the summary)."""
    if folds is None:
        path = os.path.join(data_dir, f"{split}-summary.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return int(json.load(f)["clips_written"])
    from keras_astpe.data.pipeline import read_records

    records = read_records(files or split_files(data_dir, split))
    if folds is not None:
        wanted = tf.constant(sorted(set(folds)), tf.int64)
        records = records.filter(lambda r: tf.reduce_any(tf.equal(r["fold"], wanted)))
    return int(records.reduce(np.int64(0), lambda count, _: count + 1))


def with_num_clips(dataset, num_clips, batch_size):
    """`dataset` of `num_clips` clips in batches (last one partial), with that cardinality.

    Keras then knows the number of evaluation batches (progress bars, no "ran out of data"
    warning), and tf.data raises if the data do not hold that many clips.
    """
    num_batches = -(-num_clips // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(num_batches))


def read_class_names(data_dir):
    """Class names from the `classes.csv` or `class_labels_indices.csv` in `data_dir`."""
    from tfrecords_tools.common import read_class_names as read_names

    for name in ("class_labels_indices.csv", "classes.csv"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return read_names(path)
    raise FileNotFoundError(
        f"{data_dir} holds neither class_labels_indices.csv (AudioSet) nor classes.csv "
        "(ESC-50): the converters of tfrecords_tools write them next to the TFRecords.")


def resolve_stats(run_dir, train_files, frontend, *, source_dir=None, max_clips=None,
                  progress=True):
    """Normalization statistics of a run, stored as `<run_dir>/normalization_stats.json`.

    A run keeps the statistics it started with (a resumed run must scale its inputs as
    before). A new run copies `<source_dir>/normalization_stats.json` when there is one
    (e.g. computed once for a dataset, or those of a pretrained model), otherwise computes
    them from `train_files` (at most `max_clips` clips; None uses all).
    """
    from keras_astpe.normalization import STATS_FILENAME, NormalizationStats, compute_stats

    own = os.path.join(run_dir, STATS_FILENAME)
    if os.path.exists(own):
        stats = NormalizationStats.load(own)
    elif source_dir is not None and os.path.exists(os.path.join(source_dir, STATS_FILENAME)):
        stats = NormalizationStats.load(source_dir)
        print(f"Normalization statistics from {os.path.join(source_dir, STATS_FILENAME)}")
    else:
        print(f"Computing normalization statistics from {len(train_files)} training shard(s)"
              + ("" if max_clips is None else f" (at most {max_clips} clips)"), flush=True)
        stats = compute_stats(train_files, frontend, max_clips=max_clips, progress=progress)
    if stats.frontend is not None and stats.frontend != frontend:
        raise ValueError(
            f"The normalization statistics were computed for the front end {stats.frontend}, "
            f"but the model needs {frontend}.")
    if not os.path.exists(own):
        stats.save(own)
    return stats


# ---------------------------------------------------------------------------------------
# Deterministic, resumable training
# ---------------------------------------------------------------------------------------


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


class DropoutReseed(keras.callbacks.Callback):
    """Re-seeds the random state of dropout at each epoch's first batch, from `(seed, epoch)`.

    Keras does not save the state of the seed generators in checkpoints, and on PyTorch
    unseeded `Dropout` layers draw from torch's global generator. Seeding every
    `keras.random.SeedGenerator` of the model (and, on PyTorch, the global generator) from
    `(seed, epoch)` makes the dropout masks of an epoch the same in a resumed run as in an
    uninterrupted one. It happens at the first batch rather than at the epoch start because
    on PyTorch, creating the data iterator (at the first epoch of a `fit`) draws from the
    global generator.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = int(seed)
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch is None:
            return
        epoch, self._epoch = self._epoch, None
        for index, state in enumerate(seed_generator_states(self.model)):
            value = np.array([derive_seed(self.seed, 0, epoch, index), 0])
            state.assign(value.astype(keras.backend.standardize_dtype(state.dtype)))
        if keras.backend.backend() == "torch":
            import torch

            torch.manual_seed(derive_seed(self.seed, 1, epoch))


class LogLearningRate(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (for `CSVLogger`, `TensorBoard`).

    Place it before the loggers in the callback list.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


def seed_generator_states(model):
    """The state variables of the model's seed generators (dropout), in a fixed order."""
    return [variable for variable in model.non_trainable_variables
            if variable.path.rsplit("/", 1)[-1] == "seed_generator_state"]


def build_for_fit(model, dataset):
    """Builds the compiled loss, metrics and optimizer of `model` before `fit`.

    On JAX and PyTorch, `fit` otherwise reads a first batch to build them and then restarts
    its dataset; a tf.data pipeline that reshuffles on every iteration (as `make_dataset`
    does) then trains on its second shuffle, and a resumed run on another shuffle than the
    uninterrupted run. Here one batch of zeros shaped like `dataset.element_spec` (the data
    are not read) is evaluated instead, with no effect on the training state.
    """
    def zeros(spec):
        return np.zeros([1 if dim is None else dim for dim in spec.shape],
                        spec.dtype.as_numpy_dtype)

    features, targets = (zeros(spec) for spec in dataset.element_spec[:2])
    model.evaluate(features, targets, batch_size=len(features), verbose=0)
    if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _checkpoint_name(step):
    return f"ckpt-{step:012d}.weights.h5"


def latest_checkpoint(directory):
    """`(path, step)` of the newest complete checkpoint in `directory`, or `(None, 0)`."""
    if not os.path.isdir(directory):
        return None, 0
    steps = [int(m.group(1)) for m in map(_CHECKPOINT_RE.match, os.listdir(directory)) if m]
    if not steps:
        return None, 0
    step = max(steps)
    return os.path.join(directory, _checkpoint_name(step)), step


def restore_checkpoint(model, path):
    """Loads model and optimizer state (written by `IntervalCheckpoint`) into `model`.

    The model must be compiled with the optimizer it was trained with. Returns the
    optimizer step of the checkpoint.
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("restore_checkpoint needs a compiled model (for the optimizer).")
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class IntervalCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state at the end of every epoch (= checkpoint interval).

    Files are `<directory>/ckpt-<step>.weights.h5`, `step` the optimizer step, written
    under a temporary name and renamed, so a killed process never leaves a partial
    checkpoint that looks complete. The newest `keep` checkpoints are kept. Place this
    callback after the loggers (`CSVLogger`): a checkpoint then implies that its epoch was
    logged.
    """

    def __init__(self, directory, keep=2):
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.fspath(directory)
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        path = os.path.join(self.directory, _checkpoint_name(step))
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".weights.h5")
        os.close(fd)
        try:
            self.model.save_weights(tmp, overwrite=True)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        names = sorted(name for name in os.listdir(self.directory)
                       if _CHECKPOINT_RE.match(name))
        for name in names[:-self.keep]:
            os.remove(os.path.join(self.directory, name))


class RunMismatchError(ValueError):
    """A run folder holds a run with other settings than the ones given."""


class RunConfig:
    """The settings that define a run, stored as `<run_dir>/run_config.json`.

    `check_or_write` writes them at the first start; a restart must present the same
    settings, else resuming would silently mix two runs.
    """

    FILENAME = "run_config.json"

    @staticmethod
    def check_or_write(run_dir, config):
        path = os.path.join(run_dir, RunConfig.FILENAME)
        config = json.loads(json.dumps(config))  # tuples -> lists, as stored
        if not os.path.exists(path):
            write_json(path, config)
            return
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        differences = {key: (stored.get(key), config.get(key))
                       for key in sorted(set(stored) | set(config))
                       if stored.get(key) != config.get(key)}
        if differences:
            listing = "; ".join(f"{key}: {old!r} -> {new!r}"
                                for key, (old, new) in differences.items())
            raise RunMismatchError(
                f"{run_dir} holds a run with other settings ({listing}). Rerun with the "
                "same settings to resume it, or choose another --output_dir.")


def truncate_training_log(path, num_epochs):
    """Keeps the rows of epochs `< num_epochs` of a `CSVLogger` file (before resuming).

    A run killed after logging an epoch but before its checkpoint repeats that epoch; this
    drops the row it would otherwise log twice.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, epoch = rows[0], rows[0].index("epoch") if "epoch" in rows[0] else None
    if epoch is None:
        return
    kept = [row for row in rows[1:] if row and int(float(row[epoch])) < num_epochs]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *kept])


def read_training_log(path, steps_per_epoch=None):
    """A `CSVLogger` file as `{column: [values]}`, with `step` instead of `epoch` if asked.

    With `steps_per_epoch`, the 0-based epoch column becomes the optimizer step at the end
    of the epoch, the x axis of `plot_learning_curves`.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [float(row[name]) if row[name] not in ("", "nan", "NA") else float("nan")
                      for row in rows] for name in (rows[0] if rows else [])}
    if steps_per_epoch is not None and "epoch" in columns:
        columns["step"] = [(epoch + 1) * steps_per_epoch for epoch in columns.pop("epoch")]
    return columns


# ---------------------------------------------------------------------------------------
# Evaluation and outputs
# ---------------------------------------------------------------------------------------


def predict(model, dataset, num_examples=None, description="predict"):
    """`(targets, scores)` numpy arrays over a `(features, targets)` dataset, in order.

    One pass over the data (the front end runs once), with a progress bar.
    """
    targets, scores = [], []
    progbar = keras.utils.Progbar(num_examples, unit_name="clip")
    print(description, flush=True)
    for features, batch_targets in dataset.as_numpy_iterator():
        batch_scores = keras.ops.convert_to_numpy(model.predict_on_batch(features))
        targets.append(batch_targets)
        scores.append(batch_scores.astype(np.float32))
        progbar.add(len(batch_targets))
    if not targets:
        raise ValueError("The dataset to predict on is empty.")
    return np.concatenate(targets), np.concatenate(scores)


def save_inference_model(model, path):
    """Saves `model` as a `.keras` file without optimizer state, atomically.

    Loadable with `keras.saving.load_model(path)` after `import keras_astpe`.
    """
    path = os.fspath(path)
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".keras")
    os.close(fd)
    try:
        copy.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path, content):
    """Writes JSON atomically (temporary file + rename); NaN is written as null."""
    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.ndarray):
            return clean(value.tolist())
        if isinstance(value, (np.floating, float)):
            return None if not np.isfinite(value) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        return value

    directory = os.path.dirname(os.fspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(clean(content), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
