"""Hyperparameter search (keras-tuner) over the positional encoding, learning rate, depth and
dropout of an AST classifier, with the failures keras-tuner hides made loud.

keras-tuner catches every exception a trial raises, marks the trial failed and goes on; at
the end `get_best_hyperparameters()` still returns "the best" hyperparameters, those of a
failed trial when none completed. On TensorFlow >= 2.20 (which no longer installs
tensorboard) keras-tuner 1.4.8 fails every trial this way, because it imports
`tensorboard.plugins.hparams` in each trial on the TensorFlow backend. Hence:

- `check_tensorboard()` before a search: a clear error with the fix, not a silent search.
- `check_trials(tuner)` after it: `TrialsFailedError`, with the first failed trial's error
  and traceback, when any trial failed or none completed.

The objective is `val_pr_auc`: `keras.metrics.AUC(curve="PR", multi_label=True)` on the
validation data, the area under the precision-recall curve of each class (200 thresholds),
averaged over classes: a training-time estimate of the AudioSet mAP, to maximise. Classes
without a positive in the validation data count as 0 in this average (the exact mAP of
`keras_astpe.training.tagging_metrics` leaves them out); the comparison between trials on
the same validation data is what matters.

    hypermodel = ASTHyperModel(num_classes=527, preset="ast-pe-small")
    tuner = make_tuner("bayesian", hypermodel, directory="saved_models/tune", max_trials=20)
    best = run_search(tuner, train_ds, eval_ds, "saved_models/tune", epochs=3,
                      steps_per_epoch=500)
"""

import json
import os

import keras
import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

import keras_astpe
from keras_astpe.models import PE_KINDS, get_preset

OBJECTIVE = "val_pr_auc"
TUNERS = ("hyperband", "bayesian")
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.json"
TRIALS_FILE = "trials.json"
_SCHEDULE_PREFIX = "tuner/"  # Hyperband's bookkeeping entries in the trial hyperparameters


def check_tensorboard():
    """Raises `ImportError` with the fix when keras-tuner's tensorboard import would fail.

    keras-tuner 1.4.8 imports `tensorboard.plugins.hparams` in every trial on the
    TensorFlow backend; without tensorboard (not installed with TensorFlow >= 2.20) every
    trial fails.
    """
    try:
        from tensorboard.plugins.hparams import api  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "keras-tuner needs tensorboard (it imports tensorboard.plugins.hparams in every "
            "trial and fails them all without it), and TensorFlow >= 2.20 no longer "
            "installs it. Install it with `pip install tensorboard` (or reinstall this "
            f"package: `pip install -e .`). Import error: {error}") from error


class ASTHyperModel(keras_tuner.HyperModel):
    """Builds and compiles an AST classifier from a trial's hyperparameters.

    Searched: `position_encoding` (one of `pe_kinds`), `learning_rate` (log-uniform),
    `num_layers` (integer) and `dropout` (uniform). A range whose bounds are equal is fixed.
    The rest of the model is `preset`. Training as in the paper, at a constant learning
    rate (trials are short): Adam with gradient clipping by value 1, binary cross-entropy
    on sigmoid outputs (`multi_label=True`, AudioSet) or categorical cross-entropy on
    softmax outputs (single-label data such as ESC-50). Metric: `pr_auc` (see `OBJECTIVE`).

    Args:
        num_classes: output classes.
        preset: model size, one of `keras_astpe.PRESETS`.
        multi_label: sigmoid + BCE (multi-hot targets) or softmax + CCE (one-hot).
        pe_kinds: positional encodings to choose from (`keras_astpe.PE_KINDS`).
        learning_rate: `(min, max)`, sampled log-uniformly.
        num_layers: `(min, max)` encoder blocks.
        dropout: `(min, max)` residual dropout rate.
        **model_overrides: other `ASTBackbone` arguments, fixed for every trial
            (e.g. `num_frames=496` for 5 s clips).
    """

    def __init__(self, num_classes, *, preset="ast-pe-tiny", multi_label=True,
                 pe_kinds=PE_KINDS, learning_rate=(1e-5, 1e-3), num_layers=(1, 4),
                 dropout=(0.0, 0.3), **model_overrides):
        super().__init__(name="ast")
        get_preset(preset)  # validates the name
        pe_kinds = tuple(pe_kinds)
        unknown = sorted(set(pe_kinds) - set(PE_KINDS))
        if not pe_kinds or unknown:
            raise ValueError(f"`pe_kinds` must be a non-empty subset of {PE_KINDS}. "
                             f"Received: {pe_kinds}")
        for name, value in (("num_layers", num_layers), ("dropout", dropout),
                            ("learning_rate", learning_rate)):
            low, high = _check_range(name, value)
            if name == "num_layers" and (low < 1 or int(low) != low or int(high) != high):
                raise ValueError(f"`num_layers` must be integers >= 1. Received: {value}")
            if name == "dropout" and not 0 <= low <= high < 1:
                raise ValueError(f"`dropout` must be in [0, 1). Received: {value}")
            if name == "learning_rate" and low <= 0:
                raise ValueError(f"`learning_rate` must be > 0. Received: {value}")
        self.num_classes = int(num_classes)
        self.preset = preset
        self.multi_label = bool(multi_label)
        self.pe_kinds = pe_kinds
        self.learning_rate = tuple(float(v) for v in learning_rate)
        self.num_layers = tuple(int(v) for v in num_layers)
        self.dropout = tuple(float(v) for v in dropout)
        self.model_overrides = model_overrides

    def build(self, hp):
        if len(self.pe_kinds) > 1:
            pe = hp.Choice("position_encoding", list(self.pe_kinds))
        else:
            pe = hp.Fixed("position_encoding", self.pe_kinds[0])
        learning_rate = _float(hp, "learning_rate", self.learning_rate, sampling="log")
        low, high = self.num_layers
        num_layers = (hp.Int("num_layers", low, high) if high > low
                      else hp.Fixed("num_layers", low))
        dropout = _float(hp, "dropout", self.dropout)
        model = keras_astpe.build_model(
            pe, preset=self.preset, num_classes=self.num_classes,
            activation="sigmoid" if self.multi_label else "softmax",
            num_layers=num_layers, dropout=dropout, **self.model_overrides)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate, clipvalue=1.0),
            loss="binary_crossentropy" if self.multi_label else "categorical_crossentropy",
            metrics=[keras.metrics.AUC(curve="PR", multi_label=True,
                                       num_labels=self.num_classes, name="pr_auc")])
        return model


def _check_range(name, value):
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a (min, max) pair. Received: {value}") from None
    if low > high:
        raise ValueError(f"`{name}` must have min <= max. Received: {value}")
    return low, high


def _float(hp, name, value_range, sampling="linear"):
    low, high = value_range
    if high > low:
        return hp.Float(name, low, high, sampling=sampling)
    return hp.Fixed(name, low)


def make_tuner(kind, hypermodel, *, directory, project_name="search", max_trials=None,
               epochs=1, hyperband_factor=3, seed=None, overwrite=False):
    """A keras-tuner tuner maximising `OBJECTIVE`, checkpointing under `directory`.

    Args:
        kind: `"bayesian"` (Gaussian-process Bayesian optimisation; every trial trains
            `epochs` epochs given to `run_search`) or `"hyperband"` (successive halving:
            many short trials, the best continued, up to `epochs` epochs each).
        hypermodel: e.g. an `ASTHyperModel`.
        directory, project_name: the tuner's state goes to `directory/project_name`; an
            existing search there is resumed unless `overwrite`.
        max_trials: number of trials; default 10 for `bayesian`. For `hyperband` the
            schedule (from `epochs` and `hyperband_factor`) sets the number; `max_trials`
            caps it, cutting the schedule short.
        epochs: `hyperband`'s maximum epochs per trial (ignored by `bayesian`, whose
            epochs are `run_search`'s).
        hyperband_factor: `hyperband`'s reduction factor between rounds.
        seed: seed of the search.
        overwrite: start afresh instead of resuming.
    """
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = {"objective": objective, "seed": seed, "directory": os.fspath(directory),
              "project_name": project_name, "overwrite": overwrite}
    if max_trials is not None and max_trials < 1:
        raise ValueError(f"`max_trials` must be >= 1. Received: {max_trials}")
    if kind == "bayesian":
        max_trials = max_trials or 10
        return keras_tuner.BayesianOptimization(
            hypermodel, max_trials=max_trials,
            num_initial_points=min(max_trials, max(2, max_trials // 3)), **common)
    if kind == "hyperband":
        if epochs < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=epochs, factor=hyperband_factor,
                                      **common)
        # The base oracle stops creating trials at `max_trials`; Hyperband does not expose it.
        tuner.oracle.max_trials = max_trials
        return tuner
    raise ValueError(f"Unknown tuner {kind!r}; expected one of {TUNERS}.")


class TrialsFailedError(RuntimeError):
    """A search in which a trial failed or no trial completed: its "best" is meaningless."""


def _error_line(message):
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _search_values(hyperparameters):
    """The searched values as plain Python numbers (the Bayesian oracle gives numpy ones)."""
    return {name: value.item() if isinstance(value, np.generic) else value
            for name, value in hyperparameters.values.items()
            if not name.startswith(_SCHEDULE_PREFIX)}


def trial_table(tuner, epochs=None):
    """One dict per trial, best first (completed by score, then the others in order).

    Keys: `trial_id`, `status`, `score` (`OBJECTIVE`; None unless completed), `best_step`
    (0-based epoch of the best score), `epochs` (the trial's last epoch: Hyperband's, else
    `epochs`), `continues` (the Hyperband trial whose weights it trained further, else
    None), `hyperparameters` (the searched values) and `error` (last line of the error of
    a failed trial, else None).
    """
    rows = []
    for trial in tuner.oracle.trials.values():
        completed = trial.status == TrialStatus.COMPLETED
        values = trial.hyperparameters.values
        rows.append({
            "trial_id": trial.trial_id,
            "status": trial.status,
            "score": float(trial.score) if completed and trial.score is not None else None,
            "best_step": int(trial.best_step) if completed and trial.best_step is not None
            else None,
            "epochs": values.get(f"{_SCHEDULE_PREFIX}epochs", epochs),
            "continues": values.get(f"{_SCHEDULE_PREFIX}trial_id"),
            "hyperparameters": _search_values(trial.hyperparameters),
            "error": None if completed else _error_line(trial.message),
        })
    return sorted(rows, key=lambda row: (row["score"] is None, -(row["score"] or 0.0)))


def check_trials(tuner):
    """Raises `TrialsFailedError` unless every trial of the search completed.

    The message has the number of failed trials, the first one's hyperparameters and its
    error with traceback.
    """
    trials = list(tuner.oracle.trials.values())
    if not trials:
        raise TrialsFailedError("The search ran no trial.")
    failed = [trial for trial in trials if trial.status != TrialStatus.COMPLETED]
    if not failed:
        return
    first = failed[0]
    statuses = sorted({trial.status for trial in failed})
    raise TrialsFailedError(
        f"{len(failed)} of {len(trials)} trials did not complete (status "
        f"{', '.join(statuses)}): the search result cannot be trusted. First: trial "
        f"{first.trial_id} with {_search_values(first.hyperparameters)}: "
        f"{_error_line(first.message) or 'no error recorded'}\n\n"
        f"{(first.message or '').strip()}")


def format_trial_table(rows):
    """`trial_table` rows as an aligned text table."""
    names = list(dict.fromkeys(name for row in rows for name in row["hyperparameters"]))
    continued = any(row["continues"] is not None for row in rows)
    header = ["trial", "status", OBJECTIVE, *names, "epochs",
              *(["continues"] if continued else []), "error"]
    lines = [header]
    for row in rows:
        hps = row["hyperparameters"]
        lines.append([
            str(row["trial_id"]), row["status"],
            "-" if row["score"] is None else f"{row['score']:.4f}",
            *(_format_value(hps.get(name)) for name in names),
            _format_value(row["epochs"]),
            *([_format_value(row["continues"])] if continued else []),
            row["error"] or "",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)),
                   line[-1]]).rstrip()
        for line in lines)


def _format_value(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_results(tuner, output_dir, extra=None, epochs=None):
    """Writes `trials.json` (`trial_table` rows), and `best_hyperparameters.json` when every
    trial completed; returns `(rows, best)` with `best` None when not written.

    `extra` (e.g. the data and preset of the search) is stored in both files; `epochs`: see
    `trial_table`.
    """
    os.makedirs(output_dir, exist_ok=True)
    rows = trial_table(tuner, epochs=epochs)
    extra = dict(extra or {})
    _write_json(os.path.join(output_dir, TRIALS_FILE),
                {"objective": OBJECTIVE, "direction": "max", **extra, "trials": rows})
    completed = [row for row in rows if row["status"] == TrialStatus.COMPLETED]
    best = None
    if rows and len(completed) == len(rows):
        top = completed[0]
        best = {"objective": OBJECTIVE, "direction": "max", "score": top["score"],
                "trial_id": top["trial_id"], "best_step": top["best_step"],
                "epochs": top["epochs"], "continues": top["continues"],
                "hyperparameters": top["hyperparameters"], **extra}
        _write_json(os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE), best)
    else:
        stale = os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE)
        if os.path.exists(stale):
            os.remove(stale)  # from an earlier search: never leave it beside failed trials
    return rows, best


def _write_json(path, content):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def run_search(tuner, train_data, validation_data, output_dir, *, extra=None,
               **fit_kwargs):
    """`tuner.search`, then the results written, printed and checked.

    Writes `trials.json` even when the search raises or trials failed, prints the trial
    table, then raises `TrialsFailedError` if any trial did not complete. `fit_kwargs` go to
    `fit` (e.g. `epochs`, `steps_per_epoch`, `callbacks`; Hyperband sets the epochs itself).

    Returns:
        The best trial as written to `best_hyperparameters.json` (see `write_results`).
    """
    search_error = None
    try:
        tuner.search(train_data, validation_data=validation_data, **fit_kwargs)
    except RuntimeError as error:  # the oracle stops after 3 consecutive failed trials
        search_error = error
    finally:
        rows, best = write_results(tuner, output_dir, extra=extra,
                                   epochs=fit_kwargs.get("epochs"))
        if rows:
            print(f"\nTrials (best first; objective {OBJECTIVE}, max):\n"
                  f"{format_trial_table(rows)}\n", flush=True)
    try:
        check_trials(tuner)
    except TrialsFailedError as error:
        raise error from search_error
    if search_error is not None:
        raise search_error
    return best
