"""ESC-50 evaluation of the AST-PE study (SPEC section 5): 5-fold cross-validation.

    config = ESC50Config.create(init="saved_models/audioset/time_alibi/model.keras",
                                data_dir="data/esc50")
    results = evaluate_esc50(config)

For each official fold: a fresh copy of the AudioSet model (or a model from scratch) gets a
new output layer (softmax over the ESC-50 classes); stage 1 trains only that layer
(paper: 10 epochs at 1e-3), stage 2 the whole model (paper: 40 epochs from 1e-4, x0.85 per
epoch); the held-out fold is then classified. Clips are 5 s on a model pretrained on 10 s
clips: every positional encoding accepts any number of frames.
"""

import collections
import csv
import dataclasses
import os
import time

import keras
import numpy as np

import keras_astpe
from keras_astpe.data.pipeline import make_dataset
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models import ASTBackbone, ASTClassifier, get_preset
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import experiment
from keras_astpe.training.metrics import classification_metrics
from keras_astpe.training.plots import plot_confusion_matrix, plot_learning_curves

SPLIT = "esc50"
CLIP_SECONDS = 5.0

# The paper's fine-tuning (with --data_dir); it does not give the batch size.
PAPER_DEFAULTS = {
    "preset": "ast-pe", "batch_size": 32, "head_epochs": 10, "head_lr": 1e-3,
    "finetune_epochs": 40, "finetune_lr": 1e-4, "lr_decay": 0.85,
}
# The demo (no --data_dir): 5 folds of the synthetic demo ESC-50 in minutes on 2 CPU cores.
# Fine-tuning the demo AudioSet model (the model of
# `train_audioset.py` without --data_dir, same preset); 10 steps per epoch, hence the
# larger head learning rate.
DEMO_DEFAULTS = {
    "preset": "ast-pe-tiny", "batch_size": 16, "head_epochs": 5, "head_lr": 1e-2,
    "finetune_epochs": 15, "finetune_lr": 5e-4, "lr_decay": 0.85,
}
# From scratch there is nothing pretrained to protect: no head-only stage. A transformer
# trained from scratch on the 160 demo clips of a fold needs many more steps.
SCRATCH_DEFAULTS = {"head_epochs": 0}
DEMO_SCRATCH_DEFAULTS = {
    "head_epochs": 0, "batch_size": 32, "finetune_epochs": 60, "finetune_lr": 5e-4,
    "lr_decay": 0.99,
}
# The demo run with neither init nor pe fine-tunes the model of the README's main job,
# `python recipes/train_audioset.py --pe=time_alibi` (its default output folder).
DEMO_INIT = os.path.join("saved_models", "audioset-demo", "time_alibi", "model.keras")
# Epochs per fit with a validation on the held-out fold (for the learning curves; the
# reported accuracy is that of the last epoch, whatever the validations show).
NUM_VALIDATIONS = 10


@dataclasses.dataclass(frozen=True)
class ESC50Config:
    """Settings of an ESC-50 cross-validation; `create` fills in the mode's defaults.

    Attributes:
        init: `.keras` AudioSet model to fine-tune (e.g. the `model.keras` of
            `train_audioset`); None trains from scratch.
        pe, preset: model from scratch (without `init`).
        batch_size: batch size of both stages.
        head_epochs, head_lr: stage 1, only the new output layer trains (paper: 10, 1e-3).
            From scratch the default is 0: there is nothing pretrained to protect.
        finetune_epochs, finetune_lr, lr_decay: stage 2, the whole model trains, the
            learning rate multiplied by `lr_decay` after every epoch (paper: 40, 1e-4, 0.85).
        data_dir: folder of the TFRecords written by `tfrecords_tools.esc50`; None uses the
            synthetic demo data (generated under `demo_data/`).
        folds: held-out folds to evaluate; None is every fold in the data.
        output_dir: results folder; None is `saved_models/esc50[-demo]/<name>`.
        seed: seeds the new layers, data order, augmentation and dropout, per fold.
        demo_size: size of the generated demo data (`"small"` or `"tiny"`).
    """

    preset: str
    batch_size: int
    head_epochs: int
    head_lr: float
    finetune_epochs: int
    finetune_lr: float
    lr_decay: float
    init: str | None = None
    pe: str | None = None
    data_dir: str | None = None
    folds: tuple | None = None
    output_dir: str | None = None
    seed: int = 0
    demo_size: str = "small"

    @classmethod
    def create(cls, init=None, pe=None, data_dir=None, **settings):
        """The config: settings that are None or absent take the defaults of the mode, the
        paper's with a `data_dir`, the demo's without, and from scratch (no `init`) those
        of `SCRATCH_DEFAULTS` / `DEMO_SCRATCH_DEFAULTS`. The demo with neither `init` nor
        `pe` fine-tunes `DEMO_INIT`, the model of `train_audioset.py`'s demo run."""
        if init is None and pe is None and not data_dir:
            if not os.path.exists(DEMO_INIT):
                raise FileNotFoundError(
                    f"No init or pe given, and no demo AudioSet model at {DEMO_INIT} to "
                    "fine-tune: run `python recipes/train_audioset.py --pe=time_alibi` "
                    "first, or pass pe to train from scratch.")
            init = DEMO_INIT
        if (init is None) == (pe is None):
            raise ValueError("Give either init (an AudioSet .keras model to fine-tune) or pe "
                             "(a positional encoding, to train from scratch).")
        defaults = dict(PAPER_DEFAULTS if data_dir else DEMO_DEFAULTS)
        if init is None:
            defaults.update(SCRATCH_DEFAULTS if data_dir else DEMO_SCRATCH_DEFAULTS)
        given = {key: value for key, value in settings.items() if value is not None}
        if init is not None and given.get("preset"):
            raise ValueError("preset applies to training from scratch; with init the model "
                             "comes from the checkpoint.")
        config = cls(init=init, pe=pe, data_dir=data_dir, **{**defaults, **given})
        if config.output_dir is None:
            name = (os.path.basename(os.path.dirname(os.path.abspath(init))) if init
                    else f"{pe}-scratch")
            folder = "esc50" if data_dir else "esc50-demo"
            config = dataclasses.replace(config, output_dir=os.path.join("saved_models",
                                                                         folder, name))
        return config

    def __post_init__(self):
        if self.pe is not None and self.pe not in keras_astpe.PE_KINDS:
            raise ValueError(f"pe must be one of {keras_astpe.PE_KINDS}, got {self.pe!r}")
        if self.preset not in keras_astpe.PRESETS:
            raise ValueError(f"preset must be one of {sorted(keras_astpe.PRESETS)}, "
                             f"got {self.preset!r}")
        if self.init is not None and not os.path.isfile(self.init):
            raise FileNotFoundError(f"init model {self.init} not found (train one with "
                                    "recipes/train_audioset.py: <output_dir>/model.keras)")
        if self.batch_size < 1 or self.head_epochs < 0 or self.finetune_epochs < 0:
            raise ValueError("need batch_size >= 1, head_epochs >= 0 and finetune_epochs >= 0")
        if self.head_epochs + self.finetune_epochs < 1:
            raise ValueError("head_epochs + finetune_epochs must be >= 1")
        if not (self.head_lr > 0 and self.finetune_lr > 0 and 0 < self.lr_decay <= 1):
            raise ValueError("need head_lr > 0, finetune_lr > 0 and 0 < lr_decay <= 1")
        if self.folds is not None and not self.folds:
            raise ValueError("folds is empty: pass None for every fold")
        if self.demo_size not in ("small", "tiny"):
            raise ValueError(f"demo_size must be 'small' or 'tiny', got {self.demo_size!r}")

    def to_dict(self):
        content = dataclasses.asdict(self)
        content["folds"] = None if self.folds is None else list(self.folds)
        return content


def _new_classifier(config, num_classes):
    """A fresh model for one fold: the pretrained backbone (or a new one) + a softmax head."""
    if config.init is not None:
        pretrained = keras.saving.load_model(config.init, compile=False)
        backbone = getattr(pretrained, "backbone", None)
        if not isinstance(backbone, ASTBackbone):
            raise ValueError(f"{config.init} is not a keras_astpe ASTClassifier model.")
    else:
        backbone = ASTBackbone(position_encoding=config.pe, **get_preset(config.preset))
    return ASTClassifier(backbone, num_classes, activation="softmax")


def _compile(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipvalue=1.0),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def evaluate_esc50(config, verbose="auto"):
    """Runs the cross-validation of `config` and writes its results folder.

    Writes in `config.output_dir`: `results.json` (accuracy per fold, mean and std over the
    folds, chance, config), `confusion_matrix.png` and `.csv` (summed over the folds),
    `normalization_stats.json`, and per fold `fold_<k>/training_log.csv` and
    `fold_<k>/learning_curves.png`.

    Returns:
        The content of `results.json`, plus `output_dir`.
    """
    start_time = time.monotonic()
    run_dir = config.output_dir
    os.makedirs(run_dir, exist_ok=True)

    # === Data ===
    if config.data_dir is None:
        data_dir = experiment.prepare_demo_data("esc50", size=config.demo_size)
    else:
        data_dir = config.data_dir
    files = experiment.split_files(data_dir, SPLIT, dataset="esc50")
    class_names = experiment.read_class_names(data_dir)
    num_classes = len(class_names)
    clips_per_fold = _clips_per_fold(files)
    available = sorted(clips_per_fold)
    folds = sorted(set(config.folds)) if config.folds is not None else available
    missing = sorted(set(folds) - set(available))
    if missing:
        raise ValueError(f"folds {missing} are not in {data_dir} (folds: {available})")
    if len(available) < 2:
        raise ValueError(f"{data_dir} holds only fold(s) {available}: cross-validation needs 2")

    # === Front end and statistics (those of the pretrained model with --init) ===
    probe = _new_classifier(config, num_classes).backbone
    frontend = FrontEndConfig(num_mel_bins=probe.num_mel_bins)
    clip_samples = int(CLIP_SECONDS * frontend.sample_rate)
    stats_path = os.path.join(run_dir, STATS_FILENAME)
    if os.path.exists(stats_path):
        os.remove(stats_path)  # a new evaluation: statistics from its own source
    source_dir = os.path.dirname(os.path.abspath(config.init)) if config.init else data_dir
    if config.init and not os.path.exists(os.path.join(source_dir, STATS_FILENAME)):
        raise FileNotFoundError(
            f"{os.path.join(source_dir, STATS_FILENAME)} not found: the fine-tuned model must "
            "scale its inputs as in pretraining (train_audioset writes the statistics next "
            "to model.keras).")
    stats = experiment.resolve_stats(run_dir, files, frontend, source_dir=source_dir)
    print(f"ESC-50 {'fine-tuning ' + config.init if config.init else 'from scratch: ' + config.pe}"
          f"; {num_classes} classes, folds {folds}; {probe.position_encoding}, "
          f"{probe.count_params():,} backbone parameters", flush=True)

    # === Cross-validation ===
    data = {"num_classes": num_classes, "batch_size": config.batch_size,
            "clip_samples": clip_samples, "frontend": frontend, "stats": stats,
            "multi_label": False}
    per_fold, confusion = {}, np.zeros((num_classes, num_classes), np.int64)
    for fold in folds:
        train_folds = [f for f in available if f != fold]
        num_train = sum(clips_per_fold[f] for f in train_folds)
        num_test = clips_per_fold[fold]
        steps_per_epoch = max(1, num_train // config.batch_size)
        train = make_dataset(files, training=True, folds=train_folds,
                             seed=experiment.derive_seed(config.seed, fold, 1),
                             deterministic=True, **data)
        test = experiment.with_num_clips(
            make_dataset(files, training=False, folds=[fold], **data), num_test,
            config.batch_size)

        keras.utils.set_random_seed(experiment.derive_seed(config.seed, fold, 0))
        model = _new_classifier(config, num_classes)
        fold_dir = os.path.join(run_dir, f"fold_{fold}")
        os.makedirs(fold_dir, exist_ok=True)
        log_path = os.path.join(fold_dir, "training_log.csv")
        if os.path.exists(log_path):
            os.remove(log_path)
        print(f"\n=== Fold {fold}: train on folds {train_folds} ({num_train} clips), test on "
              f"{num_test} clips ===", flush=True)

        _fine_tune(model, config, train, test, steps_per_epoch, log_path,
                   experiment.derive_seed(config.seed, fold, 2), verbose)

        targets, scores = experiment.predict(model, test, num_test,
                                             description=f"Classifying fold {fold}")
        metrics = classification_metrics(targets.argmax(axis=1), scores)
        per_fold[fold] = {"accuracy": metrics["accuracy"], "num_test_clips": num_test,
                          "num_train_clips": num_train}
        confusion += metrics["confusion_matrix"]
        plot_learning_curves(log_path, os.path.join(fold_dir, "learning_curves.png"),
                             title=f"ESC-50 fold {fold}")
        print(f"Fold {fold}: accuracy {metrics['accuracy']:.4f}", flush=True)

    accuracies = np.array([per_fold[fold]["accuracy"] for fold in folds])
    _write_confusion_csv(os.path.join(run_dir, "confusion_matrix.csv"), confusion, class_names)
    results = {
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std()),
        "accuracy_per_fold": {str(fold): per_fold[fold]["accuracy"] for fold in folds},
        "folds": {str(fold): per_fold[fold] for fold in folds},
        "chance_accuracy": 1.0 / num_classes,
        "num_classes": num_classes,
        "position_encoding": probe.position_encoding,
        "backend": keras.backend.backend(),
        "wall_time_seconds": round(time.monotonic() - start_time, 1),
        "config": {**config.to_dict(), "data_dir": os.path.abspath(data_dir),
                   "clip_samples": clip_samples},
        "normalization_stats": {"low": stats.low, "high": stats.high,
                                "num_clips": stats.num_clips},
    }
    experiment.write_json(os.path.join(run_dir, "results.json"), results)
    plot_confusion_matrix(confusion, class_names, os.path.join(run_dir, "confusion_matrix.png"),
                          title=f"ESC-50, folds {folds} summed")
    return {**results, "output_dir": run_dir}


def _fine_tune(model, config, train, test, steps_per_epoch, log_path, seed, verbose):
    """Stage 1 (output layer only), then stage 2 (whole model), logged to `log_path`."""
    def callbacks():
        return [experiment.DropoutReseed(seed), experiment.LogLearningRate(),
                keras.callbacks.CSVLogger(log_path, append=True)]

    if config.head_epochs:
        print(f"Stage 1: output layer only, {config.head_epochs} epochs at "
              f"lr {config.head_lr:g}", flush=True)
        model.backbone.trainable = False
        _compile(model, config.head_lr)
        experiment.build_for_fit(model, train)
        model.fit(train, epochs=config.head_epochs, steps_per_epoch=steps_per_epoch,
                  shuffle=False,
                  validation_data=test, validation_freq=_validation_epochs(
                      0, config.head_epochs), callbacks=callbacks(), verbose=verbose)
    if config.finetune_epochs:
        print(f"Stage 2: whole model, {config.finetune_epochs} epochs from lr "
              f"{config.finetune_lr:g}, x{config.lr_decay:g} per epoch", flush=True)
        model.backbone.trainable = True
        _compile(model, keras.optimizers.schedules.ExponentialDecay(
            config.finetune_lr, steps_per_epoch, config.lr_decay, staircase=True))
        experiment.build_for_fit(model, train)
        last = config.head_epochs + config.finetune_epochs
        model.fit(train, epochs=last, initial_epoch=config.head_epochs, shuffle=False,
                  steps_per_epoch=steps_per_epoch, validation_data=test,
                  validation_freq=_validation_epochs(config.head_epochs, last),
                  callbacks=callbacks(), verbose=verbose)


def _validation_epochs(initial_epoch, epochs):
    """1-based epochs of a `fit` that validate: about `NUM_VALIDATIONS`, always the first
    (so that `CSVLogger` sees the validation columns) and the last."""
    chosen = np.linspace(initial_epoch + 1, epochs, min(NUM_VALIDATIONS, epochs - initial_epoch))
    return sorted({int(round(epoch)) for epoch in chosen})


def _clips_per_fold(files):
    """`{fold: number of clips}` of the records of `files` (one pass, no decoding)."""
    from keras_astpe.data.pipeline import read_records

    folds = read_records(files).map(lambda record: record["fold"])
    return dict(sorted(collections.Counter(int(f) for f in folds.as_numpy_iterator()).items()))


def _write_confusion_csv(path, confusion, class_names):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, confusion, strict=True):
            writer.writerow([name, *row.tolist()])
