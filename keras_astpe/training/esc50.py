"""ESC-50 evaluation of the AST-PE study (SPEC section 5): 5-fold cross-validation.

    config = ESC50Config.named(init="saved_models/audioset/time_alibi/model.keras",
                               data_dir="data/esc50")
    results = evaluate_esc50(config)

Each official fold is held out in turn, in runs of the training engine (`engine.train`):
stage 1 gives the AudioSet model a new output layer (softmax over the ESC-50 classes) and
trains that layer alone (paper: 10 epochs at 1e-3), stage 2 fine-tunes the whole model it
wrote (paper: 40 epochs from 1e-4, x0.85 per epoch); the engine evaluates the held-out fold.
From scratch (`--pe`) there is no stage 1. Clips are 5 s on a model pretrained on 10 s
clips: every positional encoding accepts any number of frames. Each run resumes as any
engine run does.
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
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.presets import get_preset_entry
from keras_astpe.training import engine, outputs, resumption, trainer
from keras_astpe.training.plots import plot_confusion_matrix

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
    `confusion_matrix.png` and `.csv` (summed over the folds), and per fold the engine's run
    folder `fold_<k>/` (stage 1 in `fold_<k>/head/`): its model, metrics, logs and plots.

    Returns:
        The content of `results.json`, plus `output_dir`.
    """
    start_time = time.monotonic()
    run_dir = trainer.prepare_output_dir(config.output_dir)
    info = DatasetInfo.load(config.data_dir)
    plan = _plan_folds(info, config, log)
    if config.init:
        pretrained = engine.load_classifier(config.init)
        position_encoding = pretrained.backbone.position_encoding
        what = (f"fine-tuning {config.init}; {position_encoding}, "
                f"{pretrained.backbone.count_params():,} backbone parameters")
    else:
        position_encoding = config.pe
        what = f"from scratch: {config.pe} ({config.preset})"
    log(f"ESC-50 {what}; {info.num_classes} classes, folds {plan.folds}")

    per_fold, runs, skips = {}, {}, trainer.SkipCounter()
    for fold in plan.folds:
        log(f"\n=== Fold {fold}: train on the other folds, test on its "
            f"{plan.clips_per_fold[fold]} clips ===")
        for stage in fold_configs(config, info, plan, fold):
            runs[fold] = engine.train(stage, verbose=verbose, log=log)
            for purpose, count in runs[fold]["skipped_bad_records"].items():
                skips.add(purpose, count)
        per_fold[fold] = {"accuracy": runs[fold]["accuracy"],
                          "num_test_clips": runs[fold]["num_eval_clips"],
                          "num_train_clips": sum(plan.clips_per_fold[f] for f in
                                                 plan.clips_per_fold if f != fold)}
        log(f"Fold {fold}: accuracy {per_fold[fold]['accuracy']:.4f}")
    confusion = sum(np.array(runs[fold]["confusion_matrix"]) for fold in plan.folds)
    first = runs[plan.folds[0]]
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
                   "clip_samples": first["config"]["clip_samples"]},
        "normalization": first["normalization"],
    }
    write_json(os.path.join(run_dir, "results.json"), results)
    plot_confusion_matrix(confusion, info.class_names,
                          os.path.join(run_dir, "confusion_matrix.png"),
                          title=f"ESC-50, folds {plan.folds} summed")
    return {**results, "output_dir": run_dir}


def fold_configs(config, info, plan, fold):
    """The engine runs that hold out `fold`: stage 1 (the output layer alone, when
    `head_epochs`), then stage 2 (the whole model, from stage 1's model), in
    `<output_dir>/fold_<fold>/head` and `<output_dir>/fold_<fold>`.

    An epoch is a pass over the training folds: one checkpoint interval, validated on the
    held-out fold (the learning curves); the reported accuracy is the last epoch's.
    """
    fold_dir = os.path.join(config.output_dir, f"fold_{fold}")
    train_folds = tuple(f for f in sorted(plan.clips_per_fold) if f != fold)
    steps = max(1, sum(plan.clips_per_fold[f] for f in train_folds) // config.batch_size)
    common = {"data_dir": config.data_dir, "data": config.data, "batch_size": config.batch_size,
              "seed": resumption.derive_seed(config.seed, fold), "train_splits": (SPLIT,),
              "train_folds": train_folds, "eval_split": SPLIT, "eval_folds": (fold,),
              "validation_split": SPLIT, "checkpoint_every": steps, "warmup_steps": 0,
              "export": False}
    stages, init = [], config.init
    if config.head_epochs:
        head_dir = os.path.join(fold_dir, "head")
        stages.append(engine.TrainConfig(
            **common, init=init, trainable="head", schedule="constant", max_lr=config.head_lr,
            train_steps=config.head_epochs * steps, output_dir=head_dir))
        init = os.path.join(head_dir, "model.keras")
    model = ({"init": init} if init else
             {"pe": config.pe, "preset": config.preset,
              "frames": _clip_frames(config.preset, info.clip_seconds)})
    stages.append(engine.TrainConfig(
        **common, **model, max_lr=config.finetune_lr,
        decay_rate=config.lr_decay ** config.finetune_epochs, decay_every=steps,
        train_steps=config.finetune_epochs * steps, output_dir=fold_dir))
    return stages


def _clip_frames(preset, clip_seconds):
    """Frames of a clip of the data with the front end of `preset` (a new model's
    positions are those of the clips it trains on)."""
    entry = get_preset_entry(preset)
    front_end = entry.log_mel_config if entry.needs_statistics else KaldiFbankConfig()
    return front_end.num_frames(int(round(clip_seconds * front_end.sample_rate)))


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
