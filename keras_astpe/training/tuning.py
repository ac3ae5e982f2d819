"""Hyperparameter search (keras-tuner) over the positional encoding, learning rate, depth and
dropout of an AST classifier: each trial is a run of the training engine (`engine.train`)
with the trial's values, and the failures keras-tuner hides are made loud.

keras-tuner catches every exception a trial raises, marks the trial failed and goes on; at
the end `get_best_hyperparameters()` still returns "the best" hyperparameters, those of a
failed trial when none completed. `check_trials(tuner)` after the search raises
`TrialsFailedError`, with the first failed trial's error and traceback, when any trial
failed or none completed.

The objective is the metric the engine evaluates a trial's final model with on the
validation data, to maximise: the mAP (multi-label data) or the accuracy (single-label).

    tuner = make_tuner("bayesian", SearchSpace(pe_kinds=("none", "time_alibi")),
                       {"data_dir": "data/audioset", "preset": "ast-pe-small", ...},
                       objective="mAP", directory="saved_models/tune", epochs=3,
                       steps_per_epoch=500, max_trials=20)
    best = run_search(tuner, "saved_models/tune")

`tune(TuneConfig(...))` is all of it on converted data, as `recipes/tune.py` runs it.
"""

import dataclasses
import os

import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

import keras_astpe
from keras_astpe.cli import setting
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.io_utils import write_json
from keras_astpe.models import PE_KINDS
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import engine, trainer

TUNERS = ("hyperband", "bayesian")
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.json"
TRIALS_FILE = "trials.json"
_SCHEDULE_PREFIX = "tuner/"  # Hyperband's bookkeeping entries in the trial hyperparameters


class SearchSpace:
    """The values a trial draws: `position_encoding` (one of `pe_kinds`), `learning_rate`
    (log-uniform), `num_layers` (integer) and `dropout` (uniform). A range whose bounds are
    equal is fixed.

    Args:
        pe_kinds: positional encodings to choose from (`keras_astpe.PE_KINDS`).
        learning_rate: `(min, max)`, the constant learning rate of a trial.
        num_layers: `(min, max)` encoder blocks.
        dropout: `(min, max)` residual dropout rate.
    """

    def __init__(self, *, pe_kinds=PE_KINDS, learning_rate=(1e-5, 1e-3), num_layers=(1, 4),
                 dropout=(0.0, 0.3)):
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
        self.pe_kinds = pe_kinds
        self.learning_rate = tuple(float(v) for v in learning_rate)
        self.num_layers = tuple(int(v) for v in num_layers)
        self.dropout = tuple(float(v) for v in dropout)

    def draw(self, hp):
        """The engine settings of the trial whose hyperparameters are `hp`."""
        if len(self.pe_kinds) > 1:
            pe = hp.Choice("position_encoding", list(self.pe_kinds))
        else:
            pe = hp.Fixed("position_encoding", self.pe_kinds[0])
        learning_rate = _float(hp, "learning_rate", self.learning_rate, sampling="log")
        low, high = self.num_layers
        num_layers = (hp.Int("num_layers", low, high) if high > low
                      else hp.Fixed("num_layers", low))
        dropout = _float(hp, "dropout", self.dropout)
        return {"pe": pe, "max_lr": float(learning_rate), "num_layers": int(num_layers),
                "dropout": float(dropout)}


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


class EngineTuner(keras_tuner.Tuner):
    """keras-tuner's search loop whose trials are runs of `engine.train`.

    A trial trains a new model of the drawn settings on top of `settings` (the engine's,
    shared by every trial), at the drawn constant learning rate, for `epochs` checkpoint
    intervals of `steps_per_epoch` steps, in `<trial folder>/run`; its score is the
    engine's `objective` on the evaluation split. A Hyperband trial that continues another
    fine-tunes that trial's model for its remaining epochs. `stats`: the search's
    normalization statistics, given to every trial (one statistics pass per search).
    """

    def __init__(self, oracle, *, space, settings, epochs, steps_per_epoch, stats=None,
                 log=print, **kwargs):
        super().__init__(oracle, **kwargs)
        space.draw(self.oracle.hyperparameters)  # the search space, known before any trial
        self.space, self.settings, self.epochs = space, dict(settings), int(epochs)
        self.steps_per_epoch, self.stats, self.log = int(steps_per_epoch), stats, log

    def run_dir(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), "run")

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        drawn = self.space.draw(hp)
        epochs = hp.values.get(f"{_SCHEDULE_PREFIX}epochs", self.epochs)
        initial = hp.values.get(f"{_SCHEDULE_PREFIX}initial_epoch", 0)
        continued = hp.values.get(f"{_SCHEDULE_PREFIX}trial_id")
        model = ({"init": os.path.join(self.run_dir(continued), "model.keras")} if continued
                 else {key: drawn[key] for key in ("pe", "num_layers", "dropout")})
        run_dir = self.run_dir(trial.trial_id)
        if self.stats is not None and not os.path.exists(os.path.join(run_dir, STATS_FILENAME)):
            self.stats.save(run_dir)
        config = engine.TrainConfig(
            **self.settings, **model, max_lr=drawn["max_lr"], schedule="constant",
            warmup_steps=0, checkpoint_every=self.steps_per_epoch,
            train_steps=(epochs - initial) * self.steps_per_epoch, export=False,
            output_dir=run_dir)
        self.log(f"Trial {trial.trial_id}: {_search_values(hp)}"
                 + (f", continuing trial {continued}" if continued else ""))
        results = engine.train(config, verbose=2, log=self.log)
        return {self.oracle.objective.name: results[self.oracle.objective.name]}


def make_tuner(kind, space, settings, *, objective, directory, epochs, steps_per_epoch,
               project_name="search", max_trials=None, hyperband_factor=3, seed=None,
               overwrite=False, stats=None, log=print):
    """An `EngineTuner` maximising `objective` ("mAP" or "accuracy"), its state under
    `directory/project_name`.

    Args:
        kind: `"bayesian"` (Gaussian-process Bayesian optimisation; every trial trains
            `epochs` epochs) or `"hyperband"` (successive halving: many short trials, the
            best continued, up to `epochs` epochs each).
        space: the `SearchSpace`; `settings`: the engine settings of every trial (data,
            splits, preset, batch size; see `engine.TrainConfig`).
        max_trials: number of trials; default 10 for `bayesian`. For `hyperband` the
            schedule (from `epochs` and `hyperband_factor`) sets the number; `max_trials`
            caps it, cutting the schedule short.
        overwrite: start afresh instead of resuming the search in `directory`.
    """
    objective = keras_tuner.Objective(objective, direction="max")
    if max_trials is not None and max_trials < 1:
        raise ValueError(f"`max_trials` must be >= 1. Received: {max_trials}")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"`epochs` and `steps_per_epoch` must be >= 1. Received: {epochs}, "
                         f"{steps_per_epoch}")
    if kind == "bayesian":
        max_trials = max_trials or 10
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            objective, max_trials=max_trials, seed=seed,
            num_initial_points=min(max_trials, max(2, max_trials // 3)))
    elif kind == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(objective, max_epochs=epochs,
                                                     factor=hyperband_factor, seed=seed)
        # The base oracle stops creating trials at `max_trials`; Hyperband does not expose it.
        oracle.max_trials = max_trials
    else:
        raise ValueError(f"Unknown tuner {kind!r}; expected one of {TUNERS}.")
    return EngineTuner(oracle, space=space, settings=settings, epochs=epochs,
                       steps_per_epoch=steps_per_epoch, stats=stats, log=log,
                       directory=os.fspath(directory), project_name=project_name,
                       overwrite=overwrite)


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


def trial_table(tuner):
    """One dict per trial, best first (completed by score, then the others in order).

    Keys: `trial_id`, `status`, `score` (the objective; None unless completed), `epochs`
    (the trial's last epoch: Hyperband's, else the tuner's), `continues` (the Hyperband
    trial whose model it trained further, else None), `hyperparameters` (the searched
    values), `run` (the trial's engine run folder, with its `model.keras`) and `error`
    (last line of the error of a failed trial, else None).
    """
    rows = []
    for trial in tuner.oracle.trials.values():
        completed = trial.status == TrialStatus.COMPLETED
        values = trial.hyperparameters.values
        rows.append({
            "trial_id": trial.trial_id,
            "status": trial.status,
            "score": float(trial.score) if completed and trial.score is not None else None,
            "epochs": values.get(f"{_SCHEDULE_PREFIX}epochs", tuner.epochs),
            "continues": values.get(f"{_SCHEDULE_PREFIX}trial_id"),
            "hyperparameters": _search_values(trial.hyperparameters),
            "run": tuner.run_dir(trial.trial_id),
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


def format_trial_table(rows, objective):
    """`trial_table` rows as an aligned text table."""
    names = list(dict.fromkeys(name for row in rows for name in row["hyperparameters"]))
    continued = any(row["continues"] is not None for row in rows)
    header = ["trial", "status", objective, *names, "epochs",
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


def write_results(tuner, output_dir, extra=None):
    """Writes `trials.json` (`trial_table` rows), and `best_hyperparameters.json` when every
    trial completed; returns `(rows, best)` with `best` None when not written.

    `extra` (e.g. the data and preset of the search) is stored in both files.
    """
    os.makedirs(output_dir, exist_ok=True)
    rows = trial_table(tuner)
    objective = {"objective": tuner.oracle.objective.name, "direction": "max"}
    extra = dict(extra or {})
    write_json(os.path.join(output_dir, TRIALS_FILE), {**objective, **extra, "trials": rows})
    completed = [row for row in rows if row["status"] == TrialStatus.COMPLETED]
    best = None
    if rows and len(completed) == len(rows):
        top = completed[0]
        best = {**objective, "score": top["score"], "trial_id": top["trial_id"],
                "epochs": top["epochs"], "continues": top["continues"],
                "hyperparameters": top["hyperparameters"],
                "model": os.path.join(top["run"], "model.keras"), **extra}
        write_json(os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE), best)
    else:
        stale = os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE)
        if os.path.exists(stale):
            os.remove(stale)  # from an earlier search: never leave it beside failed trials
    return rows, best


def run_search(tuner, output_dir, *, extra=None):
    """`tuner.search()`, then the results written, printed and checked.

    Writes `trials.json` even when the search raises or trials failed, prints the trial
    table, then raises `TrialsFailedError` if any trial did not complete.

    Returns:
        The best trial as written to `best_hyperparameters.json` (see `write_results`).
    """
    search_error = None
    try:
        tuner.search()
    except RuntimeError as error:  # the oracle stops after 3 consecutive failed trials
        search_error = error
    finally:
        rows, best = write_results(tuner, output_dir, extra=extra)
        if rows:
            objective = tuner.oracle.objective.name
            print(f"\nTrials (best first; objective {objective}, max):\n"
                  f"{format_trial_table(rows, objective)}\n", flush=True)
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
    train_split: str | None = setting(
        None, help="Split the trials train on. Default: the smallest training split "
        "(AudioSet: balanced_train).")
    eval_split: str | None = setting(
        None, help="Split the trials are scored on. Default: the eval or validation split "
        "(ESC-50: the training split, --eval_fold held out).")
    eval_fold: int | None = setting(
        None, help="For data with folds in one split (ESC-50): score on this fold, train "
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
    frames: int | None = setting(
        None, help="Frames (10 ms) of each clip's features (default: the preset's).")
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
        if self.tuner not in TUNERS:
            raise ValueError(f"--tuner must be one of {TUNERS}, got {self.tuner!r}")
        self.search_space()  # checks the ranges before any data work

    def search_space(self):
        return SearchSpace(pe_kinds=self.pe_kinds, learning_rate=self.learning_rate_range,
                           num_layers=self.num_layers_range, dropout=self.dropout_range)


def _splits(info, config):
    """`(train split, train folds, eval split, eval folds)` of the search."""
    by_size = sorted(info.splits_with_role("train"), key=lambda name: info.num_clips(name))
    train_split = config.train_split or (by_size[0] if by_size else None)
    if train_split is None:
        raise ValueError(f"{info.data_dir} has no training split: pass --train_split")
    folds = info.split(train_split).cross_validation_folds
    eval_split = config.eval_split or next(
        iter(info.splits_with_role("eval") + info.splits_with_role("validation")), None)
    eval_fold = config.eval_fold
    if eval_split is None or eval_split == train_split:
        if not folds:
            raise ValueError(f"{info.data_dir} has no validation split: pass --eval_split")
        eval_split, eval_fold = train_split, eval_fold or folds[0]
    if eval_fold is None:
        return train_split, None, eval_split, None
    if eval_fold not in folds:
        raise ValueError(f"--eval_fold={eval_fold}: the data have no fold {eval_fold} "
                         f"(folds: {list(folds)})")
    return train_split, tuple(f for f in folds if f != eval_fold), eval_split, (eval_fold,)


def tune(config, data_dir, log=print):
    """Runs the search of `config` on the converted data in `data_dir` (see `run_search`).

    Returns the best trial as written to `best_hyperparameters.json`.
    """
    output_dir = trainer.prepare_output_dir(
        config.output_dir or os.path.join("saved_models", "tune", config.tuner))
    info = DatasetInfo.load(data_dir)
    train_split, train_folds, eval_split, eval_folds = _splits(info, config)
    if config.overwrite and os.path.exists(os.path.join(output_dir, STATS_FILENAME)):
        os.remove(os.path.join(output_dir, STATS_FILENAME))  # a new search
    skips = trainer.SkipCounter()
    converter = trainer.preset_converter(
        config.preset, output_dir, info.split_files(train_split), skips,
        stats_source=data_dir, skip_bad_records=config.data.skip_bad_records, progress=False,
        log=log)
    settings = {"data_dir": data_dir, "data": config.data, "seed": config.seed,
                "preset": config.preset, "frames": config.frames,
                "batch_size": config.batch_size, "train_splits": (train_split,),
                "train_folds": train_folds, "eval_split": eval_split, "eval_folds": eval_folds,
                "validation_split": eval_split}
    objective = engine.headline_metric(info)
    tuner = make_tuner(config.tuner, config.search_space(), settings, objective=objective,
                       directory=output_dir, epochs=config.epochs,
                       steps_per_epoch=config.steps_per_epoch, max_trials=config.max_trials,
                       hyperband_factor=config.hyperband_factor, seed=config.seed,
                       overwrite=config.overwrite, stats=getattr(converter, "stats", None),
                       log=log)
    shown = {name: "" if folds is None else f" folds {list(folds)}"
             for name, folds in (("train", train_folds), ("eval", eval_folds))}
    log(f"Data: training {train_split}{shown['train']}; scored on {eval_split}"
        f"{shown['eval']}; {info.num_classes} classes, "
        f"{'multi' if info.multi_label else 'single'}-label; objective {objective}")
    tuner.search_space_summary()
    extra = {"tuner": config.tuner, "preset": config.preset, "data_dir": data_dir,
             "train_split": train_split, "train_folds": train_folds, "eval_split": eval_split,
             "eval_folds": eval_folds, "batch_size": config.batch_size,
             "steps_per_epoch": config.steps_per_epoch}
    best = run_search(tuner, output_dir, extra=extra)
    log(f"Best trial {best['trial_id']}: {objective} = {best['score']:.4f} with "
        f"{best['hyperparameters']}; its model: {best['model']}")
    log(f"Written: {os.path.join(output_dir, BEST_HYPERPARAMETERS_FILE)}, "
        f"{os.path.join(output_dir, TRIALS_FILE)}")
    return best
