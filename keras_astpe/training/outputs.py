"""What a run leaves behind: predictions, the saved model, logs and tables."""

import csv
import os

import keras
import numpy as np

from keras_astpe.io_utils import atomic_path


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


def save_model(model, path):
    """Saves `model` as a `.keras` file without optimizer state, atomically.

    Loadable on any backend with `keras.saving.load_model(path)` after `import keras_astpe`.
    """
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        copy.save(tmp)
    return os.fspath(path)


def write_csv(path, rows):
    """Writes `rows` (the first is the header) as a CSV file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return os.fspath(path)


class LogLearningRate(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (for `CSVLogger`, `TensorBoard`).

    Place it before the loggers in the callback list.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


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
