"""ESC-50 evaluation of the AST-PE study (SPEC section 5): 5-fold cross-validation.

    config = ESC50Config.named(init="saved_models/audioset/time_alibi/model.keras",
                               data_dir="data/esc50")
    results = evaluate_esc50(config)

For each official fold: a fresh copy of the AudioSet model (or a model from scratch) gets a
new output layer (softmax over the ESC-50 classes); stage 1 trains only that layer
(paper: 10 epochs at 1e-3), stage 2 the whole model (paper: 40 epochs from 1e-4, x0.85 per
epoch); the held-out fold is then classified. Clips are 5 s on a model pretrained on 10 s
clips: every positional encoding accepts any number of frames.
"""

import dataclasses
import os
import time

import keras
import numpy as np

import keras_astpe
from keras_astpe.cli import NamedConfigs, setting
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.io_utils import write_json
from keras_astpe.models import ASTBackbone, ASTClassifier, get_head, get_preset
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import engine, keras_internals, outputs, resumption, trainer
from keras_astpe.training.metrics import classification_metrics
from keras_astpe.training.plots import plot_confusion_matrix, plot_learning_curves

SPLIT = "esc50"

# The paper's fine-tuning (with --data_dir); it does not give the batch size.
PAPER = {"preset": "ast-pe", "batch_size": 32, "head_epochs": 10, "head_lr": 1e-3,
         "finetune_epochs": 40, "finetune_lr": 1e-4, "lr_decay": 0.85}
# The demo (no --data_dir): 5 folds of the synthetic demo ESC-50 in minutes on 2 CPU cores,
# fine-tuning the demo AudioSet model (the model of `train_audioset.py` without --data_dir,
# same preset); 10 steps per epoch, hence the larger head learning rate.
DEMO = {"preset": "ast-pe-tiny", "batch_size": 16, "head_epochs": 5, "head_lr": 1e-2,
        "finetune_epochs": 15, "finetune_lr": 5e-4, "lr_decay": 0.85}
# From scratch there is nothing pretrained to protect: no head-only stage. A transformer
# trained from scratch on the 160 demo clips of a fold needs many more steps.
SCRATCH = {"head_epochs": 0}
DEMO_SCRATCH = {"head_epochs": 0, "batch_size": 32, "finetune_epochs": 60,
                "finetune_lr": 5e-4, "lr_decay": 0.99}
# The demo run with neither init nor pe fine-tunes the model of the README's main job,
# `python recipes/train_audioset.py --pe=time_alibi` (its default output folder).
DEMO_INIT = os.path.join("saved_models", "audioset-demo", "time_alibi", "model.keras")
# Epochs per fit with a validation on the held-out fold (for the learning curves; the
# reported accuracy is that of the last epoch, whatever the validations show).
NUM_VALIDATIONS = 10
# Folds this much smaller than the largest one make the per-fold mean meaningless.
MIN_FOLD_FRACTION = 0.5


def _output_dir(folder):
    def name(settings):
        model = (os.path.basename(os.path.dirname(os.path.abspath(settings["init"])))
                 if settings.get("init") else f"{settings['pe']}-scratch")
        return os.path.join("saved_models", folder, model)

    return name


@dataclasses.dataclass(frozen=True, kw_only=True)
class ESC50Config(NamedConfigs, trainer.RecipeConfig):
    """Settings of an ESC-50 cross-validation; each field is a flag of
    `recipes/eval_esc50.py`."""

    CONFIGS = {
        "paper": {**PAPER, "output_dir": _output_dir("esc50")},
        "paper-scratch": {**PAPER, **SCRATCH, "output_dir": _output_dir("esc50")},
        "demo": {**DEMO, "output_dir": _output_dir("esc50-demo")},
        "demo-scratch": {**DEMO, **DEMO_SCRATCH, "output_dir": _output_dir("esc50-demo")},
    }

    init: str | None = setting(
        None, help="AudioSet model to fine-tune (the model.keras of "
        "recipes/train_audioset.py; it carries its front end and statistics). Either --init "
        "or --pe; for the demo (no --data_dir) with neither, the model of `python "
        f"recipes/train_audioset.py --pe=time_alibi`: {DEMO_INIT}.")
    pe: str | None = setting(None, choices=keras_astpe.PE_KINDS,
                             help="Positional encoding of a model trained from scratch "
                             "(without --init).")
    data_dir: str | None = setting(
        None, help="Folder of ESC-50 TFRecords written by tfrecords_tools.esc50. Without "
        "it, the demo data are generated under demo_data/ on first use.")
    preset: str = setting("ast-pe-tiny", choices=sorted(keras_astpe.PRESETS),
                          help="Model size from scratch.")
    folds: tuple[int, ...] | None = setting(
        None, help="Held-out folds to evaluate (default: every fold in the data).")
    batch_size: int = setting(16, help="Batch size.")
    head_epochs: int = setting(5, help="Stage 1 epochs, output layer only; 0 when training "
                               "from scratch.")
    head_lr: float = setting(1e-2, help="Stage 1 learning rate.")
    finetune_epochs: int = setting(15, help="Stage 2 epochs, whole model.")
    finetune_lr: float = setting(5e-4, help="Stage 2 initial learning rate.")
    lr_decay: float = setting(0.85, help="Stage 2 learning-rate factor per epoch.")
    allow_unbalanced_folds: bool = setting(
        False, help="Run even when folds are empty or much smaller than the others (a "
        "partial download); read the pooled accuracy then, not the fold mean.")
    output_dir: str = setting(
        "saved_models/esc50-demo/run", help="Results folder (default: "
        "saved_models/esc50/<name>, or saved_models/esc50-demo/<name>; <name> is the folder "
        "of --init, or <pe>-scratch).")

    @classmethod
    def choose(cls, given):
        """'paper' with --data_dir, 'demo' without; '-scratch' with --pe."""
        return ("paper" if given.get("data_dir") else "demo") + (
            "-scratch" if given.get("pe") else "")

    @classmethod
    def named(cls, name=None, **given):
        """The demo with neither `init` nor `pe` fine-tunes `DEMO_INIT`, the model of
        `train_audioset.py`'s demo run."""
        if not any(given.get(key) for key in ("init", "pe", "data_dir")):
            if not os.path.exists(DEMO_INIT):
                raise FileNotFoundError(
                    f"No --init or --pe given, and no demo AudioSet model at {DEMO_INIT} to "
                    "fine-tune: run `python recipes/train_audioset.py --pe=time_alibi` "
                    "first, or pass --pe to train from scratch.")
            given = {**given, "init": DEMO_INIT}
        if given.get("init") and given.get("preset"):
            raise ValueError("--preset applies to training from scratch; with --init the "
                             "model comes from the file.")
        return super().named(name, **given)

    def __post_init__(self):
        if (self.init is None) == (self.pe is None):
            raise ValueError("Give either --init (an AudioSet .keras model to fine-tune) or "
                             "--pe (a positional encoding, to train from scratch).")
        if self.pe is not None and self.pe not in keras_astpe.PE_KINDS:
            raise ValueError(f"--pe must be one of {keras_astpe.PE_KINDS}, got {self.pe!r}")
        if self.preset not in keras_astpe.PRESETS:
            raise ValueError(f"--preset must be one of {sorted(keras_astpe.PRESETS)}, "
                             f"got {self.preset!r}")
        if self.init is not None and not os.path.isfile(self.init):
            raise FileNotFoundError(f"--init={self.init}: model file not found (train one with "
                                    "recipes/train_audioset.py: <output_dir>/model.keras)")
        if self.batch_size < 1 or self.head_epochs < 0 or self.finetune_epochs < 0:
            raise ValueError("need --batch_size >= 1, --head_epochs >= 0 and "
                             "--finetune_epochs >= 0")
        if self.head_epochs + self.finetune_epochs < 1:
            raise ValueError("--head_epochs + --finetune_epochs must be >= 1")
        if not (self.head_lr > 0 and self.finetune_lr > 0 and 0 < self.lr_decay <= 1):
            raise ValueError("need --head_lr > 0, --finetune_lr > 0 and 0 < --lr_decay <= 1")
        if self.folds is not None and not self.folds:
            raise ValueError("--folds is empty: leave it out for every fold")



def _new_classifier(config, num_classes, converter=None, class_names=None):
    """A fresh model for one fold: the pretrained backbone (or a new one) + a new softmax
    head of the same kind (AST's: LayerNorm + dense)."""
    if config.init is not None:
        pretrained = engine.load_classifier(config.init)
        backbone = pretrained.backbone
        head = {"head_norm": pretrained.head_norm is not None,
                "head_norm_epsilon": pretrained.head_norm_epsilon}
    else:
        backbone = ASTBackbone(position_encoding=config.pe, **get_preset(config.preset))
        head = get_head(config.preset)
    return ASTClassifier(backbone, num_classes, activation="softmax",
                         audio_converter=converter, class_names=class_names, **head)


def _compile(model, learning_rate):
    return trainer.compile_classifier(model, learning_rate)


def check_folds(clips_per_fold, folds, *, allow_unbalanced, log=print):
    """Says which folds are empty or much smaller than the largest; refuses (ValueError)
    unless `allow_unbalanced`, since the mean over such folds means little."""
    largest = max(clips_per_fold.values(), default=0)
    listing = ", ".join(f"fold {fold}: {clips_per_fold.get(fold, 0)}" for fold in folds)
    small = [fold for fold in folds
             if clips_per_fold.get(fold, 0) < MIN_FOLD_FRACTION * largest]
    if not small:
        return []
    message = (f"folds {small} are empty or hold fewer than {MIN_FOLD_FRACTION:.0%} of the "
               f"clips of the largest fold ({listing} clips): the per-fold mean of the "
               "cross-validation would mislead (a complete ESC-50 holds 400 clips per fold)")
    if not allow_unbalanced:
        raise ValueError(f"{message}. Complete the download, choose --folds, or pass "
                         "--allow_unbalanced_folds to run anyway.")
    log(f"WARNING: {message}. Running anyway (--allow_unbalanced_folds): read the pooled "
        "accuracy over all test clips, not the fold mean.")
    return small


def evaluate_esc50(config, verbose="auto", log=print):
    """Runs the cross-validation of `config` and writes its results folder.

    `config.data_dir` must be a converted dataset (the recipe prepares the demo data when
    it is None). Writes in `config.output_dir`: `results.json` (accuracy per fold, mean and
    std over the folds, pooled over every test clip, chance, fold sizes, config),
    `confusion_matrix.png` and `.csv` (summed over the folds), `normalization_stats.json`,
    and per fold `fold_<k>/training_log.csv` and `fold_<k>/learning_curves.png`.

    Returns:
        The content of `results.json`, plus `output_dir`.
    """
    start_time = time.monotonic()
    run_dir = trainer.prepare_output_dir(config.output_dir)
    info = DatasetInfo.load(config.data_dir)
    files = info.split_files(SPLIT)
    plan = _plan_folds(info, config, log)
    skips = trainer.SkipCounter()
    converter, position_encoding, backbone_parameters = _front_end(config, run_dir, files,
                                                                   skips, log)
    clip_samples = int(round(info.clip_seconds * converter.sample_rate))
    log(f"ESC-50 {'fine-tuning ' + config.init if config.init else 'from scratch: ' + config.pe}"
        f"; {info.num_classes} classes, folds {plan.folds}; {position_encoding}"
        + (f", {backbone_parameters:,} backbone parameters" if backbone_parameters else ""))

    make = trainer.dataset_maker(
        num_classes=info.num_classes, multi_label=False, batch_size=config.batch_size,
        clip_samples=clip_samples, converter=converter, options=config.data, skips=skips)
    per_fold = {}
    confusion = np.zeros((info.num_classes, info.num_classes), np.int64)
    for fold in plan.folds:
        per_fold[fold], fold_confusion = _run_fold(fold, config, info, plan, make, converter,
                                                    os.path.join(run_dir, f"fold_{fold}"),
                                                    verbose, log)
        confusion += fold_confusion

    accuracies = np.array([per_fold[fold]["accuracy"] for fold in plan.folds])
    outputs.write_csv(os.path.join(run_dir, "confusion_matrix.csv"),
                      [["true \\ predicted", *info.class_names],
                       *([name, *row.tolist()]
                         for name, row in zip(info.class_names, confusion, strict=True))])
    results = {
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std()),
        "accuracy_pooled": float(np.trace(confusion) / confusion.sum()),
        "accuracy_per_fold": {str(fold): per_fold[fold]["accuracy"] for fold in plan.folds},
        "folds": {str(fold): per_fold[fold] for fold in plan.folds},
        "clips_per_fold": {str(fold): count for fold, count in plan.all_folds.items()},
        "unbalanced_folds": plan.unbalanced,
        "chance_accuracy": 1.0 / info.num_classes,
        "num_classes": info.num_classes,
        "position_encoding": position_encoding,
        "skipped_bad_records": skips.counts(),
        "backend": keras.backend.backend(),
        "wall_time_seconds": round(time.monotonic() - start_time, 1),
        "config": {**config.to_dict(), "data_dir": os.path.abspath(config.data_dir),
                   "clip_samples": clip_samples},
        "normalization": trainer.normalization_record(converter),
    }
    write_json(os.path.join(run_dir, "results.json"), results)
    plot_confusion_matrix(confusion, info.class_names,
                          os.path.join(run_dir, "confusion_matrix.png"),
                          title=f"ESC-50, folds {plan.folds} summed")
    return {**results, "output_dir": run_dir}


@dataclasses.dataclass(frozen=True)
class _FoldPlan:
    all_folds: dict  # {fold: clips} of every fold of the data, empty ones too
    clips_per_fold: dict  # of the folds that hold clips
    folds: list  # the held-out folds to evaluate
    unbalanced: list  # folds much smaller than the largest (run with the user's consent)


def _plan_folds(info, config, log):
    """The folds of the data and those `config` evaluates; a clear error when they cannot
    make a cross-validation."""
    all_folds = {**dict.fromkeys(info.split(SPLIT).cross_validation_folds, 0),
                 **info.clips_per_fold(SPLIT)}
    clips_per_fold = {fold: count for fold, count in all_folds.items() if count}
    available = sorted(clips_per_fold)
    folds = sorted(set(config.folds)) if config.folds is not None else available
    missing = sorted(set(folds) - set(available))
    if missing:
        raise ValueError(f"--folds {missing} hold no clip in {config.data_dir} (clips per "
                         f"fold: {all_folds})")
    if len(available) < 2:
        raise ValueError(f"{config.data_dir} holds clips of fold(s) {available} only: "
                         "cross-validation needs 2")
    unbalanced = check_folds(all_folds, sorted(all_folds),
                             allow_unbalanced=config.allow_unbalanced_folds, log=log)
    return _FoldPlan(all_folds, clips_per_fold, folds, unbalanced)


def _front_end(config, run_dir, files, skips, log):
    """`(converter, position encoding, backbone parameters or None)` of the evaluation.

    With `--init`, the model's own front end (its statistics kept, written to the run
    folder); from scratch, the preset's, with statistics of these clips. Either way each
    clip keeps its frames: the model adapts its positions to any length.
    """
    stats_path = os.path.join(run_dir, STATS_FILENAME)
    if os.path.exists(stats_path):
        os.remove(stats_path)  # a new evaluation: statistics from its own source
    if config.init is None:
        converter = trainer.preset_converter(
            config.preset, run_dir, files, skips, stats_source=config.data_dir,
            skip_bad_records=config.data.skip_bad_records, fixed_frames=False, log=log)
        return converter, config.pe, None
    pretrained = engine.load_classifier(config.init)
    converter = trainer.with_own_frames(pretrained.audio_converter)
    if getattr(converter, "stats", None) is not None:
        converter.stats.save(stats_path)
    return (converter, pretrained.backbone.position_encoding,
            pretrained.backbone.count_params())


def _run_fold(fold, config, info, plan, make, converter, fold_dir, verbose, log):
    """Fine-tunes a fresh model on the other folds and classifies `fold`:
    `({accuracy, num_test_clips, num_train_clips}, confusion matrix)`."""
    train_folds = [f for f in sorted(plan.clips_per_fold) if f != fold]
    num_train = sum(plan.clips_per_fold[f] for f in train_folds)
    num_test = plan.clips_per_fold[fold]
    train = make(info.split_files(SPLIT), training=True, folds=train_folds,
                 deterministic=True, seed=resumption.derive_seed(config.seed, fold, 1))
    test = make(info.split_files(SPLIT), training=False, folds=[fold], num_clips=num_test)

    keras.utils.set_random_seed(resumption.derive_seed(config.seed, fold, 0))
    model = _new_classifier(config, info.num_classes, converter, info.class_names)
    os.makedirs(fold_dir, exist_ok=True)
    log_path = os.path.join(fold_dir, "training_log.csv")
    if os.path.exists(log_path):
        os.remove(log_path)
    log(f"\n=== Fold {fold}: train on folds {train_folds} ({num_train} clips), test on "
        f"{num_test} clips ===")
    _fine_tune(model, config, train, test, max(1, num_train // config.batch_size), log_path,
               resumption.derive_seed(config.seed, fold, 2), verbose, log)
    targets, scores = outputs.predict(model, test, num_test,
                                      description=f"Classifying fold {fold}")
    metrics = classification_metrics(targets.argmax(axis=1), scores)
    plot_learning_curves(log_path, os.path.join(fold_dir, "learning_curves.png"),
                         title=f"ESC-50 fold {fold}")
    log(f"Fold {fold}: accuracy {metrics['accuracy']:.4f}")
    return ({"accuracy": metrics["accuracy"], "num_test_clips": len(targets),
             "num_train_clips": num_train}, metrics["confusion_matrix"])


def _fine_tune(model, config, train, test, steps_per_epoch, log_path, seed, verbose, log):
    """Stage 1 (output layer only), then stage 2 (whole model), logged to `log_path`."""
    def callbacks():
        return [resumption.DropoutReseed(seed), outputs.LogLearningRate(),
                keras.callbacks.CSVLogger(log_path, append=True)]

    if config.head_epochs:
        log(f"Stage 1: output layer only, {config.head_epochs} epochs at lr {config.head_lr:g}")
        model.backbone.trainable = False
        _compile(model, config.head_lr)
        keras_internals.build_for_fit(model, train)
        model.fit(train, epochs=config.head_epochs, steps_per_epoch=steps_per_epoch,
                  shuffle=False,
                  validation_data=test, validation_freq=_validation_epochs(
                      0, config.head_epochs), callbacks=callbacks(), verbose=verbose)
    if config.finetune_epochs:
        log(f"Stage 2: whole model, {config.finetune_epochs} epochs from lr "
            f"{config.finetune_lr:g}, x{config.lr_decay:g} per epoch")
        model.backbone.trainable = True
        _compile(model, keras.optimizers.schedules.ExponentialDecay(
            config.finetune_lr, steps_per_epoch, config.lr_decay, staircase=True))
        keras_internals.build_for_fit(model, train)
        last = config.head_epochs + config.finetune_epochs
        model.fit(train, epochs=last, initial_epoch=config.head_epochs, shuffle=False,
                  steps_per_epoch=steps_per_epoch, validation_data=test,
                  validation_freq=_validation_epochs(config.head_epochs, last),
                  callbacks=callbacks(), verbose=verbose)


def summary(results):
    """The lines the recipe prints at the end of a cross-validation."""
    out = results["output_dir"]
    folds = ", ".join(f"fold {fold}: {100 * accuracy:.1f}%"
                      for fold, accuracy in results["accuracy_per_fold"].items())
    lines = [f"ESC-50 ({results['position_encoding']}): accuracy "
             f"{100 * results['accuracy_mean']:.1f} +- {100 * results['accuracy_std']:.1f}% "
             f"over folds, {100 * results['accuracy_pooled']:.1f}% pooled over all test clips "
             f"(chance {100 * results['chance_accuracy']:.1f}%)", folds]
    if results["unbalanced_folds"]:
        lines.append(f"WARNING: folds {results['unbalanced_folds']} are empty or small "
                     f"(clips per fold: {results['clips_per_fold']}): read the pooled accuracy.")
    skipped = {k: v for k, v in results["skipped_bad_records"].items() if v}
    if skipped:
        lines.append("Skipped bad records: " + ", ".join(
            f"{count} in {purpose}" for purpose, count in skipped.items()))
    lines += [f"Results: {os.path.join(out, 'results.json')}",
              f"Confusion matrix: {os.path.join(out, 'confusion_matrix.png')}"]
    return "\n".join(lines)


def _validation_epochs(initial_epoch, epochs):
    """1-based epochs of a `fit` that validate: about `NUM_VALIDATIONS`, always the first
    (so that `CSVLogger` sees the validation columns) and the last."""
    chosen = np.linspace(initial_epoch + 1, epochs, min(NUM_VALIDATIONS, epochs - initial_epoch))
    return sorted({int(round(epoch)) for epoch in chosen})
