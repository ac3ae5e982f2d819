r"""Hyperparameter search over the positional encoding, learning rate, depth and dropout.

    python recipes/tune.py                                   # demo data, made on the fly
    python recipes/tune.py --data_dir=data/audioset --preset=ast-pe-small \
        --tuner=hyperband --epochs=9 --steps_per_epoch=500
    python recipes/tune.py --data_dir=data/esc50 --eval_fold=1

Trains short trials of AST classifiers with keras-tuner (`--tuner=bayesian` or
`hyperband`) on TFRecords written by `tfrecords_tools`, maximising the validation
`val_pr_auc`: the area under the precision-recall curve per class averaged over classes, a
training-time estimate of mAP (see `keras_astpe.tuning`). Without `--data_dir`, the
synthetic demo data of `tfrecords_tools.demo` are generated and converted under
`demo_data/` (once; shared with the other recipes) and their AudioSet part is used.

Writes to `--output_dir`: `trials.json` (every trial: status, score, hyperparameters,
error), `best_hyperparameters.json` (only when every trial completed), the keras-tuner
state in `search/` (a re-run resumes it unless `--overwrite`), and prints the trial table.
Exits non-zero with the first failed trial's error when any trial failed.
"""

import glob
import os
import sys

import keras
import numpy as np
from absl import app, flags

import keras_astpe
from keras_astpe import tuning
from keras_astpe.data.pipeline import make_dataset, read_records, resolve_files
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import experiment

# Default (train, validation) splits of the layouts `tfrecords_tools` writes, in the order
# tried: AudioSet, class folders (Speech Commands), ESC-50 (one split, folds 1-5).
_LAYOUTS = (("balanced_train", "eval"), ("train", "validation"), ("esc50", "esc50"))
_ESC50_FOLDS = (1, 2, 3, 4, 5)
# AudioSet's class list marks multi-label data (the ESC-50 and folder converters write
# classes.csv).
_MULTI_LABEL_CLASS_FILE = "class_labels_indices.csv"

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder of TFRecords written by tfrecords_tools (with "
    "class_labels_indices.csv or classes.csv). Default: generate the demo data under "
    "--output_dir/demo_data.")
_TRAIN_PATTERN = flags.DEFINE_string(
    "train_pattern", None, "Glob of the training shards, relative to --data_dir. Default: "
    "balanced_train-*.tfrecord (AudioSet), else train-*.tfrecord, else esc50-*.tfrecord.")
_EVAL_PATTERN = flags.DEFINE_string(
    "eval_pattern", None, "Glob of the validation shards, relative to --data_dir. Default: "
    "eval-*.tfrecord (AudioSet), else validation-*.tfrecord, else esc50-*.tfrecord with "
    "--eval_fold. Large sets make every epoch's validation slow: match a few shards.")
_EVAL_FOLD = flags.DEFINE_integer(
    "eval_fold", None, "For data with folds in one split (ESC-50): validate on this fold "
    "(1-5), train on the others. Default for ESC-50 records: 1.", lower_bound=1,
    upper_bound=5)
_DEMO_SIZE = flags.DEFINE_enum(
    "demo_size", "small", ["tiny", "small"], "Size of the generated demo data (without "
    "--data_dir): small = 200 training and 100 validation clips; tiny = 12 and 10.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Results and tuner state. Default: saved_models/tune/<tuner>.")
_TUNER = flags.DEFINE_enum(
    "tuner", "bayesian", list(tuning.TUNERS), "bayesian: Gaussian-process Bayesian "
    "optimisation, --max_trials trials of --epochs epochs. hyperband: many short trials, "
    "the best continued up to --epochs epochs.")
_MAX_TRIALS = flags.DEFINE_integer(
    "max_trials", None, "Number of trials. Default: 10 for bayesian; for hyperband the "
    "schedule of --epochs and --hyperband_factor, which this caps.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer(
    "epochs", 3, "Epochs per trial (bayesian), maximum epochs per trial (hyperband).",
    lower_bound=1)
_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", 50, "Training batches per epoch (the training data repeat).",
    lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Clips per batch.", lower_bound=1)
_HYPERBAND_FACTOR = flags.DEFINE_integer(
    "hyperband_factor", 3, "hyperband: factor by which each round cuts the trials and "
    "multiplies their epochs.", lower_bound=2)
_PRESET = flags.DEFINE_enum(
    "preset", "ast-pe-tiny", sorted(keras_astpe.PRESETS), "Model size; the searched "
    "num_layers and dropout replace the preset's.")
_PE_KINDS = flags.DEFINE_list(
    "pe_kinds", list(keras_astpe.PE_KINDS), "Positional encodings to search over.")
_LEARNING_RATE_RANGE = flags.DEFINE_list(
    "learning_rate_range", ["1e-5", "1e-3"], "MIN,MAX learning rate (log-uniform, Adam at "
    "a constant rate); MIN=MAX fixes it.")
_NUM_LAYERS_RANGE = flags.DEFINE_list(
    "num_layers_range", ["1", "4"], "MIN,MAX number of encoder blocks; MIN=MAX fixes it.")
_DROPOUT_RANGE = flags.DEFINE_list(
    "dropout_range", ["0.0", "0.3"], "MIN,MAX residual dropout; MIN=MAX fixes it.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the search, the models and the data order.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Start a new search instead of resuming the one in --output_dir.")


def _pair(name, values, cast):
    if len(values) != 2:
        raise app.UsageError(f"--{name} takes MIN,MAX; got {','.join(values)!r}")
    try:
        return tuple(cast(value) for value in values)
    except ValueError:
        raise app.UsageError(f"--{name}: not numbers: {','.join(values)!r}") from None


def _data(data_dir):
    """The training and validation data of --data_dir: a dict of their globs, files, folds
    and the number of validation clips."""
    train, evaluation = _TRAIN_PATTERN.value, _EVAL_PATTERN.value
    layout = next((
        (t, e) for t, e in _LAYOUTS if glob.glob(os.path.join(data_dir, f"{t}-*.tfrecord"))
        and glob.glob(os.path.join(data_dir, f"{e}-*.tfrecord"))), None)
    if layout is None and (train is None or evaluation is None):
        raise app.UsageError(f"No training and validation splits of a known layout in "
                             f"{data_dir}: pass --train_pattern and --eval_pattern.")
    train = train or f"{layout[0]}-*.tfrecord"
    evaluation = evaluation or f"{layout[1]}-*.tfrecord"
    eval_fold = _EVAL_FOLD.value
    if eval_fold is None and train == evaluation:
        if not train.startswith("esc50"):
            raise app.UsageError("--train_pattern and --eval_pattern are the same: pass "
                                 "--eval_fold to split them by fold.")
        eval_fold = 1
    train_folds = None if eval_fold is None else [f for f in _ESC50_FOLDS if f != eval_fold]
    eval_folds = None if eval_fold is None else [eval_fold]
    train_files = resolve_files(os.path.join(data_dir, train))
    eval_files = resolve_files(os.path.join(data_dir, evaluation))
    if _EVAL_PATTERN.value is None:  # a whole split: its summary has the number of clips
        num_eval_clips = experiment.count_clips(data_dir, layout[1], eval_files, eval_folds)
    else:
        records = read_records(eval_files)
        if eval_folds is not None:
            records = records.filter(lambda record: record["fold"] == eval_fold)
        num_eval_clips = int(records.reduce(np.int64(0), lambda count, _: count + 1))
    return {"train_pattern": os.path.join(data_dir, train), "train_files": train_files,
            "train_folds": train_folds, "eval_pattern": os.path.join(data_dir, evaluation),
            "eval_files": eval_files, "eval_folds": eval_folds,
            "num_eval_clips": num_eval_clips}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        tuning.check_tensorboard()
    except ImportError as error:
        sys.exit(f"error: {error}")
    output_dir = _OUTPUT_DIR.value or os.path.join("saved_models", "tune", _TUNER.value)
    search_space = {
        "preset": _PRESET.value, "pe_kinds": _PE_KINDS.value,
        "learning_rate": _pair("learning_rate_range", _LEARNING_RATE_RANGE.value, float),
        "num_layers": _pair("num_layers_range", _NUM_LAYERS_RANGE.value, int),
        "dropout": _pair("dropout_range", _DROPOUT_RANGE.value, float)}
    try:
        tuning.ASTHyperModel(1, **search_space)  # checks the flags before any data work
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    keras.utils.set_random_seed(_SEED.value)

    data_dir = _DATA_DIR.value
    if data_dir is None:
        print(f"No --data_dir: using the {_DEMO_SIZE.value} demo data of "
              f"{experiment.DEMO_DIR}/", flush=True)
        data_dir = experiment.prepare_demo_data("audioset", size=_DEMO_SIZE.value,
                                                progress=False)
    class_names = experiment.read_class_names(data_dir)
    multi_label = os.path.isfile(os.path.join(data_dir, _MULTI_LABEL_CLASS_FILE))
    splits = _data(data_dir)
    preset = keras_astpe.get_preset(_PRESET.value)
    frontend = FrontEndConfig(num_mel_bins=preset["num_mel_bins"])
    if _OVERWRITE.value and os.path.exists(os.path.join(output_dir, STATS_FILENAME)):
        os.remove(os.path.join(output_dir, STATS_FILENAME))  # a new search: new stats
    os.makedirs(output_dir, exist_ok=True)
    stats = experiment.resolve_stats(output_dir, splits["train_files"], frontend,
                                     source_dir=data_dir, progress=False)
    data = {"num_classes": len(class_names), "batch_size": _BATCH_SIZE.value,
            "clip_samples": frontend.num_samples(preset["num_frames"]),
            "frontend": frontend, "stats": stats, "multi_label": multi_label,
            "seed": _SEED.value}
    train = make_dataset(splits["train_files"], training=True, folds=splits["train_folds"],
                         **data)
    validation = experiment.with_num_clips(
        make_dataset(splits["eval_files"], training=False, folds=splits["eval_folds"], **data),
        splits["num_eval_clips"], _BATCH_SIZE.value)

    hypermodel = tuning.ASTHyperModel(len(class_names), multi_label=multi_label,
                                      **search_space)
    tuner = tuning.make_tuner(
        _TUNER.value, hypermodel, directory=output_dir, project_name="search",
        max_trials=_MAX_TRIALS.value, epochs=_EPOCHS.value,
        hyperband_factor=_HYPERBAND_FACTOR.value, seed=_SEED.value,
        overwrite=_OVERWRITE.value)
    folds = {name: "" if splits[f"{name}_folds"] is None else f" folds {splits[f'{name}_folds']}"
             for name in ("train", "eval")}
    print(f"Data: training {splits['train_pattern']}{folds['train']}; validation "
          f"{splits['eval_pattern']}{folds['eval']} ({splits['num_eval_clips']} clips); "
          f"{len(class_names)} classes, {'multi' if multi_label else 'single'}-label")
    tuner.search_space_summary()
    extra = {"tuner": _TUNER.value, "preset": _PRESET.value,
             **{key: splits[key] for key in ("train_pattern", "train_folds", "eval_pattern",
                                             "eval_folds", "num_eval_clips")},
             "batch_size": _BATCH_SIZE.value, "steps_per_epoch": _STEPS_PER_EPOCH.value}
    try:
        best = tuning.run_search(tuner, train, validation, output_dir, extra=extra,
                                 epochs=_EPOCHS.value, steps_per_epoch=_STEPS_PER_EPOCH.value,
                                 shuffle=False, verbose=2)
    except tuning.TrialsFailedError as error:
        sys.exit(f"error: {error}\n\nAll trials: {os.path.join(output_dir, tuning.TRIALS_FILE)}")
    print(f"Best trial {best['trial_id']}: {tuning.OBJECTIVE} = {best['score']:.4f} with "
          f"{best['hyperparameters']}")
    print(f"Written: {os.path.join(output_dir, tuning.BEST_HYPERPARAMETERS_FILE)}, "
          f"{os.path.join(output_dir, tuning.TRIALS_FILE)}")


if __name__ == "__main__":
    app.run(main)
