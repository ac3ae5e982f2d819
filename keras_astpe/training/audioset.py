"""AudioSet training of the AST-PE study (SPEC section 5), resumable, with SWA.

    config = AudioSetConfig.create("time_alibi", data_dir="data/audioset")  # paper settings
    results = train_audioset(config)

Training set: the `balanced_train` and `unbalanced_train` records; evaluation: `eval`.
Adam with gradient clipping by value 1, binary cross-entropy, linear warm-up then decay,
a checkpoint every `checkpoint_every` steps, and the average of the last `swa_last`
checkpoints (SWA) as the final model, evaluated with mAP, AUC and d-prime.

A run lives in its output folder. Rerunning the same command after an interruption (even
SIGKILL) resumes from the last checkpoint with the optimizer and SWA state, and ends with
the model an uninterrupted run would have (see `keras_astpe.training.experiment`).
"""

import csv
import dataclasses
import os
import time

import keras
import numpy as np

import keras_astpe
from keras_astpe.data.pipeline import make_dataset
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.training import experiment
from keras_astpe.training.metrics import tagging_metrics
from keras_astpe.training.plots import plot_learning_curves, plot_per_class_ap
from keras_astpe.training.schedules import InverseSqrtSchedule, WarmupExponentialDecay
from keras_astpe.training.swa import StochasticWeightAveraging

SCHEDULES = ("exponential", "inverse_sqrt")
TRAIN_SPLITS = ("balanced_train", "unbalanced_train")
EVAL_SPLIT = "eval"

# The paper's settings (used with real data).
PAPER_DEFAULTS = {
    "preset": "ast-pe", "batch_size": 64, "train_steps": 290_000, "warmup_steps": 30_000,
    "max_lr": 5e-4, "checkpoint_every": 10_000, "swa_last": 10,
}
# The paper trained learned-relative attention with batch 32 for 470k steps (memory).
PAPER_DEFAULTS_BY_PE = {"learned_relative": {"batch_size": 32, "train_steps": 470_000}}
# The demo (no --data_dir): generation + conversion + training + evaluation of the
# synthetic demo data in well under 10 minutes on 2 CPU cores.
DEMO_DEFAULTS = {
    "preset": "ast-pe-tiny", "batch_size": 32, "train_steps": 800, "warmup_steps": 100,
    "max_lr": 2e-3, "checkpoint_every": 100, "swa_last": 5,
}


@dataclasses.dataclass(frozen=True)
class AudioSetConfig:
    """Settings of an AudioSet training run; `create` fills in the mode's defaults.

    Attributes:
        pe: positional encoding, one of `keras_astpe.PE_KINDS`.
        preset: model size, one of `keras_astpe.PRESETS`.
        batch_size, train_steps, warmup_steps, max_lr: optimisation (paper: 64, 290k,
            30k, 5e-4).
        checkpoint_every: steps between checkpoints (and SWA snapshots); divides
            `train_steps`.
        swa_last: number of last checkpoints averaged into the final model (paper: 10).
        schedule: `"exponential"` (the paper's text: linear warm-up, then exponential
            decay) or `"inverse_sqrt"` (the original code: warm-up, then 1/sqrt(step)).
        decay_rate: `"exponential"` only: the factor the learning rate is multiplied by
            between the end of warm-up and the last step (the paper gives none).
        data_dir: folder of the TFRecords written by `tfrecords_tools.audioset`; None
            trains on the synthetic demo data (generated under `demo_data/`).
        train_splits: splits whose records form the training set.
        output_dir: run folder; None is `saved_models/audioset[-demo]/<pe>`.
        mixed_precision: train with the `mixed_bfloat16` dtype policy.
        seed: seeds initialisation, data order, augmentation and dropout.
        stats_max_clips: clips used to compute the normalization statistics (None: all),
            unless `<data_dir>/normalization_stats.json` exists.
        demo_size: size of the generated demo data (`"small"` or `"tiny"`).
    """

    pe: str
    preset: str
    batch_size: int
    train_steps: int
    warmup_steps: int
    max_lr: float
    checkpoint_every: int
    swa_last: int
    schedule: str = "exponential"
    decay_rate: float = 0.1
    data_dir: str | None = None
    train_splits: tuple = TRAIN_SPLITS
    output_dir: str | None = None
    mixed_precision: bool = False
    seed: int = 0
    stats_max_clips: int | None = 20_000
    demo_size: str = "small"

    @classmethod
    def create(cls, pe, data_dir=None, **settings):
        """The config of `pe`: settings that are None or absent take the defaults of the
        mode, the paper's with a `data_dir`, the demo's without."""
        defaults = dict(PAPER_DEFAULTS, **PAPER_DEFAULTS_BY_PE.get(pe, {})) if data_dir \
            else dict(DEMO_DEFAULTS)
        given = {key: value for key, value in settings.items() if value is not None}
        config = cls(pe=pe, data_dir=data_dir, **{**defaults, **given})
        if config.output_dir is None:
            folder = "audioset" if data_dir else "audioset-demo"
            config = dataclasses.replace(config, output_dir=os.path.join("saved_models",
                                                                         folder, pe))
        return config

    def __post_init__(self):
        if self.pe not in keras_astpe.PE_KINDS:
            raise ValueError(f"pe must be one of {keras_astpe.PE_KINDS}, got {self.pe!r}")
        if self.preset not in keras_astpe.PRESETS:
            raise ValueError(f"preset must be one of {sorted(keras_astpe.PRESETS)}, "
                             f"got {self.preset!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("batch_size", "train_steps", "checkpoint_every", "swa_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or not self.max_lr > 0 or not 0 < self.decay_rate <= 1:
            raise ValueError("need warmup_steps >= 0, max_lr > 0 and 0 < decay_rate <= 1, got "
                             f"{self.warmup_steps}, {self.max_lr}, {self.decay_rate}")
        if self.schedule == "inverse_sqrt" and self.warmup_steps < 1:
            raise ValueError("the inverse_sqrt schedule needs warmup_steps >= 1")
        if self.train_steps % self.checkpoint_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must divide "
                             f"train_steps ({self.train_steps})")
        if self.swa_last * self.checkpoint_every > self.train_steps:
            raise ValueError(
                f"swa_last={self.swa_last} checkpoints every {self.checkpoint_every} steps "
                f"need train_steps >= {self.swa_last * self.checkpoint_every}, got "
                f"{self.train_steps}")
        if not self.train_splits:
            raise ValueError("train_splits is empty")
        if self.demo_size not in ("small", "tiny"):
            raise ValueError(f"demo_size must be 'small' or 'tiny', got {self.demo_size!r}")

    @property
    def num_intervals(self):
        return self.train_steps // self.checkpoint_every

    def to_dict(self):
        content = dataclasses.asdict(self)
        content["train_splits"] = list(self.train_splits)
        return content


def learning_rate_schedule(config):
    """The learning-rate schedule of `config` (warm-up to `max_lr`, then decay)."""
    if config.schedule == "inverse_sqrt":
        return InverseSqrtSchedule(config.max_lr, config.warmup_steps)
    return WarmupExponentialDecay(config.max_lr, config.warmup_steps,
                                  decay_steps=max(1, config.train_steps - config.warmup_steps),
                                  decay_rate=config.decay_rate)


def train_audioset(config, verbose="auto"):
    """Trains (or resumes), averages, evaluates and writes the run folder of `config`.

    Writes in `config.output_dir`: `model.keras` (the SWA model), `metrics.json` (mAP,
    AUC, d-prime, chance mAP, config), `per_class_ap.csv` / `.png`, `learning_curves.png`,
    `training_log.csv`, `tensorboard/`, `normalization_stats.json`, and the resumable
    state `checkpoints/`, `swa/` and `run_config.json`.

    Returns:
        The content of `metrics.json`, plus `output_dir`.
    """
    start_time = time.monotonic()
    run_dir = config.output_dir
    os.makedirs(run_dir, exist_ok=True)

    # === Data ===
    if config.data_dir is None:
        data_dir = experiment.prepare_demo_data("audioset", size=config.demo_size)
    else:
        data_dir = config.data_dir
    train_files = [path for split in config.train_splits
                   for path in experiment.split_files(data_dir, split)]
    eval_files = experiment.split_files(data_dir, EVAL_SPLIT)
    class_names = experiment.read_class_names(data_dir)
    num_classes = len(class_names)
    experiment.RunConfig.check_or_write(run_dir, {
        **config.to_dict(), "output_dir": None,
        "data_dir": None if config.data_dir is None else os.path.abspath(config.data_dir),
        "num_train_shards": len(train_files), "num_classes": num_classes})

    # === Model ===
    keras.utils.set_random_seed(config.seed)
    overrides = {"dtype": "mixed_bfloat16"} if config.mixed_precision else {}
    model = keras_astpe.build_model(config.pe, preset=config.preset, num_classes=num_classes,
                                    activation="sigmoid", **overrides)
    backbone = model.backbone
    frontend = FrontEndConfig(num_mel_bins=backbone.num_mel_bins)
    clip_samples = frontend.num_samples(backbone.num_frames)
    stats = experiment.resolve_stats(
        run_dir, train_files, frontend, source_dir=config.data_dir,
        max_clips=config.stats_max_clips)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(config), clipvalue=1.0),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_classes,
                                   name="mAP"),
                 keras.metrics.AUC(curve="ROC", multi_label=True, num_labels=num_classes,
                                   name="AUC")])

    # === Resume ===
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    log_path = os.path.join(run_dir, "training_log.csv")
    checkpoint, step = experiment.latest_checkpoint(checkpoint_dir)
    if checkpoint is not None:
        step = experiment.restore_checkpoint(model, checkpoint)
        print(f"Resuming {run_dir} from step {step} ({checkpoint})", flush=True)
    if step % config.checkpoint_every:
        raise ValueError(f"{checkpoint} is at step {step}, not a multiple of "
                         f"checkpoint_every={config.checkpoint_every}")
    initial_epoch = step // config.checkpoint_every
    experiment.truncate_training_log(log_path, initial_epoch)

    # === Datasets ===
    def make_interval(k):
        return make_dataset(
            train_files, num_classes=num_classes, batch_size=config.batch_size,
            training=True, clip_samples=clip_samples, frontend=frontend, stats=stats,
            seed=experiment.derive_seed(config.seed, k, 1), deterministic=True)

    num_eval_clips = experiment.count_clips(data_dir, EVAL_SPLIT, eval_files)
    eval_dataset = experiment.with_num_clips(make_dataset(
        eval_files, num_classes=num_classes, batch_size=config.batch_size, training=False,
        clip_samples=clip_samples, frontend=frontend, stats=stats), num_eval_clips,
        config.batch_size)
    swa = StochasticWeightAveraging(config.checkpoint_every, config.swa_last,
                                    state_dir=os.path.join(run_dir, "swa"))
    callbacks = [
        experiment.DropoutReseed(experiment.derive_seed(config.seed, 2)),
        swa,
        experiment.LogLearningRate(),
        keras.callbacks.CSVLogger(log_path, append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard")),
        experiment.IntervalCheckpoint(checkpoint_dir),
    ]
    if initial_epoch < config.num_intervals:
        train_dataset = experiment.interval_dataset(
            make_interval, initial_epoch, config.num_intervals, config.checkpoint_every)
        print(f"Training {config.pe} ({config.preset}, {model.count_params():,} parameters) "
              f"for {config.train_steps} steps: {config.num_intervals} intervals of "
              f"{config.checkpoint_every} steps, batch {config.batch_size}", flush=True)
    else:
        train_dataset = experiment.interval_dataset(make_interval, 0, 1, 1)  # not read
        print(f"{run_dir}: training already complete at step {step}", flush=True)
    experiment.build_for_fit(model, train_dataset)
    model.fit(train_dataset, epochs=config.num_intervals, shuffle=False,
              steps_per_epoch=config.checkpoint_every, initial_epoch=initial_epoch,
              validation_data=eval_dataset, callbacks=callbacks, verbose=verbose)
    # The model now holds the SWA average of the last `swa_last` checkpoints.

    # === Evaluation and outputs ===
    model_path = experiment.save_inference_model(model, os.path.join(run_dir, "model.keras"))
    y_true, y_score = experiment.predict(model, eval_dataset, num_eval_clips,
                                         description="Evaluating the SWA model on eval")
    metrics = tagging_metrics(y_true, y_score)
    positives = y_true.sum(axis=0)
    prevalence = positives / len(y_true)
    chance = float(np.mean(prevalence[positives > 0]))
    _write_per_class(os.path.join(run_dir, "per_class_ap.csv"), class_names, metrics,
                     positives)
    results = {
        "mAP": metrics["mAP"], "AUC": metrics["AUC"], "d_prime": metrics["d_prime"],
        "chance_mAP": chance,
        "num_eval_clips": int(len(y_true)),
        "num_classes": num_classes,
        "classes_without_positives": metrics["num_excluded_ap"],
        "swa_steps": list(swa.snapshot_steps),
        "num_parameters": int(model.count_params()),
        "backend": keras.backend.backend(),
        "wall_time_seconds_this_process": round(time.monotonic() - start_time, 1),
        "config": {**config.to_dict(),
                   "data_dir": os.path.abspath(data_dir), "clip_samples": clip_samples},
        "normalization_stats": {"low": stats.low, "high": stats.high,
                                "num_clips": stats.num_clips},
        "model": model_path,
    }
    experiment.write_json(os.path.join(run_dir, "metrics.json"), results)
    # sklearn's AP can exceed 1 by a rounding error.
    plot_per_class_ap(np.clip(metrics["per_class"]["AP"], 0.0, 1.0), class_names,
                      os.path.join(run_dir, "per_class_ap.png"),
                      title=f"Per-class AP, {config.pe} (eval)")
    if os.path.exists(log_path):
        plot_learning_curves(experiment.read_training_log(log_path, config.checkpoint_every),
                             os.path.join(run_dir, "learning_curves.png"),
                             title=f"AudioSet training, {config.pe}")
    return {**results, "output_dir": run_dir}


def _write_per_class(path, class_names, metrics, positives):
    rows = [("index", "class_name", "AP", "AUC", "eval_positives")]
    for index, name in enumerate(class_names):
        ap, auc = metrics["per_class"]["AP"][index], metrics["per_class"]["AUC"][index]
        rows.append((index, name, "" if np.isnan(ap) else f"{ap:.6f}",
                     "" if np.isnan(auc) else f"{auc:.6f}", int(positives[index])))
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
