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

`tune(TuneConfig(...))` is all of it on converted data, as `recipes/tune.py` runs it.
"""

import dataclasses
import fnmatch
import os

import keras
import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

import keras_astpe
from keras_astpe.cli import setting
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.data.shards import keep_folds, read_records
from keras_astpe.io_utils import write_json
from keras_astpe.models import PE_KINDS, get_preset
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import trainer

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
        return trainer.compile_classifier(
            model, learning_rate, metrics=[keras.metrics.AUC(curve="PR", multi_label=True,
                                       num_labels=self.num_classes, name="pr_auc")])


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
    write_json(os.path.join(output_dir, TRIALS_FILE),
                {"objective": OBJECTIVE, "direction": "max", **extra, "trials": rows})
    completed = [row for row in rows if row["status"] == TrialStatus.COMPLETED]
    best = None
    if rows and len(completed) == len(rows):
        top = completed[0]
        best = {"objective": OBJECTIVE, "direction": "max", "score": top["score"],
                "trial_id": top["trial_id"], "best_step": top["best_step"],
                "epochs": top["epochs"], "continues": top["continues"],
                "hyperparameters": top["hyperparameters"], **extra}
        write_json(os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE), best)
    else:
        stale = os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE)
        if os.path.exists(stale):
            os.remove(stale)  # from an earlier search: never leave it beside failed trials
    return rows, best


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class TuneConfig(trainer.RecipeConfig):
    """Settings of a search on converted data; each field is a flag of `recipes/tune.py`."""

    data_dir: str | None = setting(
        None, help="Folder of TFRecords written by tfrecords_tools. Default: the demo "
        "AudioSet data, generated under demo_data/.")
    train_pattern: str | None = setting(
        None, help="Glob of the training shards, relative to --data_dir. Default: the "
        "smallest training split of the dataset (AudioSet: balanced_train-*.tfrecord).")
    eval_pattern: str | None = setting(
        None, help="Glob of the validation shards, relative to --data_dir. Default: the "
        "eval or validation split (ESC-50: the same split, --eval_fold held out). Large sets "
        "make every epoch's validation slow: match a few shards.")
    eval_fold: int | None = setting(
        None, help="For data with folds in one split (ESC-50): validate on this fold, train "
        "on the others. Default for such data: the first fold.")
    demo_size: str = setting("small", choices=("tiny", "small"),
                             help="Size of the generated demo data (without --data_dir): "
                             "small = 200 training and 100 validation clips; tiny = 12 and 10.")
    output_dir: str | None = setting(
        None, help="Results and tuner state. Default: saved_models/tune/<tuner>.")
    tuner: str = setting(
        "bayesian", choices=TUNERS, help="bayesian: Gaussian-process Bayesian optimisation, "
        "--max_trials trials of --epochs epochs. hyperband: many short trials, the best "
        "continued up to --epochs epochs.")
    max_trials: int | None = setting(
        None, help="Number of trials. Default: 10 for bayesian; for hyperband the schedule "
        "of --epochs and --hyperband_factor, which this caps.")
    epochs: int = setting(3, help="Epochs per trial (bayesian), maximum epochs per trial "
                          "(hyperband).")
    steps_per_epoch: int = setting(50, help="Training batches per epoch (the training data "
                                   "repeat).")
    batch_size: int = setting(8, help="Clips per batch.")
    hyperband_factor: int = setting(3, help="hyperband: factor by which each round cuts the "
                                    "trials and multiplies their epochs.")
    preset: str = setting("ast-pe-tiny", choices=sorted(keras_astpe.PRESETS),
                          help="Model size; the searched num_layers and dropout replace the "
                          "preset's.")
    pe_kinds: tuple[str, ...] = setting(PE_KINDS, choices=PE_KINDS,
                                        help="Positional encodings to search over.")
    learning_rate_range: tuple[float, ...] = setting(
        (1e-5, 1e-3), help="MIN,MAX learning rate (log-uniform, Adam at a constant rate); "
        "MIN=MAX fixes it.")
    num_layers_range: tuple[int, ...] = setting(
        (1, 4), help="MIN,MAX number of encoder blocks; MIN=MAX fixes it.")
    dropout_range: tuple[float, ...] = setting(
        (0.0, 0.3), help="MIN,MAX residual dropout; MIN=MAX fixes it.")
    overwrite: bool = setting(False, help="Start a new search instead of resuming the one "
                              "in --output_dir.")

    def __post_init__(self):
        for name in ("learning_rate_range", "num_layers_range", "dropout_range"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"--{name} takes MIN,MAX; got {getattr(self, name)}")
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"--max_trials must be >= 1, got {self.max_trials}")
        if self.hyperband_factor < 2:
            raise ValueError(f"--hyperband_factor must be >= 2, got {self.hyperband_factor}")
        ASTHyperModel(1, **self.search_space())  # checks the ranges before any data work

    def search_space(self):
        return {"preset": self.preset, "pe_kinds": self.pe_kinds,
                "learning_rate": self.learning_rate_range,
                "num_layers": self.num_layers_range, "dropout": self.dropout_range}


def _select(info, pattern, default_split, folds):
    """`(glob, files, folds, number of clips)` of the shards `pattern` matches (relative to
    the data folder), or of `default_split` in `folds`."""
    if pattern is None:
        files = info.split_files(default_split)
        return (os.path.join(info.data_dir, f"{default_split}-*.tfrecord"), files, folds,
                info.num_clips(default_split, folds))
    glob = os.path.join(info.data_dir, pattern)
    known = {shard.path: (split, shard) for split, entry in info.splits.items()
             for shard in entry.shards}
    files = sorted(path for path in known if fnmatch.fnmatch(path, glob))
    if not files:
        raise FileNotFoundError(f"no shard of {info.data_dir} matches {glob!r} (its splits: "
                                f"{sorted(info.splits)})")
    if folds is not None or any(known[path][1].num_records is None for path in files):
        counts = _count_records(files, folds)
    else:
        counts = sum(known[path][1].num_records for path in files)
    return glob, files, folds, counts


def _count_records(files, folds):
    records = read_records(files)
    if folds is not None:
        records = keep_folds(records, folds)
    return int(records.reduce(np.int64(0), lambda count, _: count + 1))


def _splits(info, config):
    """The training and validation data of `config` in the dataset `info`."""
    train_splits = sorted(info.splits_with_role("train"),
                          key=lambda name: info.split(name).num_clips)
    eval_splits = info.splits_with_role("eval") + info.splits_with_role("validation")
    if not train_splits and config.train_pattern is None:
        raise ValueError(f"{info.data_dir} has no training split: pass --train_pattern")
    train_split = train_splits[0] if train_splits else None
    eval_split = eval_splits[0] if eval_splits else None
    eval_fold = config.eval_fold
    cross_validation = info.split(train_split).cross_validation_folds if train_split else ()
    if eval_split is None and config.eval_pattern is None:
        if not cross_validation:
            raise ValueError(f"{info.data_dir} has no validation split: pass --eval_pattern")
        eval_split, eval_fold = train_split, eval_fold or cross_validation[0]
    if eval_fold is not None and eval_fold not in cross_validation:
        raise ValueError(f"--eval_fold={eval_fold}: the data have no fold {eval_fold} "
                         f"(folds: {list(cross_validation)})")
    train_folds = None if eval_fold is None else [f for f in cross_validation if f != eval_fold]
    eval_folds = None if eval_fold is None else [eval_fold]
    return (_select(info, config.train_pattern, train_split, train_folds),
            _select(info, config.eval_pattern, eval_split, eval_folds))


def tune(config, data_dir, log=print):
    """Runs the search of `config` on the converted data in `data_dir` (see `run_search`).

    Returns the best trial as written to `best_hyperparameters.json`.
    """
    check_tensorboard()
    output_dir = trainer.prepare_output_dir(
        config.output_dir or os.path.join("saved_models", "tune", config.tuner))
    keras.utils.set_random_seed(config.seed)
    info = DatasetInfo.load(data_dir)
    (train_glob, train_files, train_folds, _), (eval_glob, eval_files, eval_folds,
                                                num_eval_clips) = _splits(info, config)
    if config.overwrite and os.path.exists(os.path.join(output_dir, STATS_FILENAME)):
        os.remove(os.path.join(output_dir, STATS_FILENAME))  # a new search
    skips = trainer.SkipCounter()
    converter = trainer.preset_converter(
        config.preset, output_dir, train_files, skips, stats_source=data_dir,
        skip_bad_records=config.data.skip_bad_records, progress=False, log=log)
    make = trainer.dataset_maker(
        num_classes=info.num_classes, multi_label=info.multi_label,
        batch_size=config.batch_size,
        clip_samples=trainer.clip_samples(converter, get_preset(config.preset)["num_frames"],
                                          info.clip_seconds),
        converter=converter, options=config.data, skips=skips)
    train = make(train_files, training=True, folds=train_folds, seed=config.seed)
    validation = make(eval_files, training=False, folds=eval_folds, num_clips=num_eval_clips)

    hypermodel = ASTHyperModel(info.num_classes, multi_label=info.multi_label,
                               **config.search_space())
    tuner = make_tuner(config.tuner, hypermodel, directory=output_dir, project_name="search",
                       max_trials=config.max_trials, epochs=config.epochs,
                       hyperband_factor=config.hyperband_factor, seed=config.seed,
                       overwrite=config.overwrite)
    shown = {name: "" if folds is None else f" folds {folds}"
             for name, folds in (("train", train_folds), ("eval", eval_folds))}
    log(f"Data: training {train_glob}{shown['train']}; validation {eval_glob}{shown['eval']} "
        f"({num_eval_clips} clips); {info.num_classes} classes, "
        f"{'multi' if info.multi_label else 'single'}-label")
    tuner.search_space_summary()
    extra = {"tuner": config.tuner, "preset": config.preset, "train_pattern": train_glob,
             "train_folds": train_folds, "eval_pattern": eval_glob, "eval_folds": eval_folds,
             "num_eval_clips": num_eval_clips, "batch_size": config.batch_size,
             "steps_per_epoch": config.steps_per_epoch}
    try:
        best = run_search(tuner, train, validation, output_dir, extra=extra,
                          epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                          shuffle=False, verbose=2)
    finally:
        summary = skips.summary()
        if summary:
            log(f"Skipped: {summary}")
    log(f"Best trial {best['trial_id']}: {OBJECTIVE} = {best['score']:.4f} with "
        f"{best['hyperparameters']}")
    log(f"Written: {os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE)}, "
        f"{os.path.join(output_dir, TRIALS_FILE)}")
    return best

