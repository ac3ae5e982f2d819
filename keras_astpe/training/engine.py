"""The training loop every training recipe configures: `train(config)`.

    config = TrainConfig(pe="time_alibi", data_dir="data/mine", output_dir="runs/mine")
    results = train(config)

A run: the dataset's description (`DatasetInfo`: splits with roles, single- or
multi-label, class names) -> the preset's front end with the run's statistics -> the model
(from scratch, from ImageNet ViT weights, or fine-tuning a `.keras` model) -> resume from
the newest intact checkpoint -> `fit` in checkpoint intervals, each seeded from its index
-> the final model (`selection`): the average of the last `swa_last` checkpoints (SWA; 1:
the last checkpoint), or the checkpoint with the best value on the validation split -> the
metrics that fit the labels on the evaluation split (mAP, AUC and d-prime multi-label;
accuracy, per-class accuracy and confusion matrix single-label) -> `model.keras` carrying
its front end and class names, the TF Serving export, metrics, plots and logs.

A run lives in its output folder. Rerunning the same command after an interruption (even
SIGKILL) resumes from the newest intact checkpoint with the optimizer and SWA state, and
ends with the model an uninterrupted run would have (see `resumption` and `run_store`). Under
`config.distribute` every worker runs `train` and the chief (worker 0) writes the folder.
"""

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np

import keras_astpe
from keras_astpe.cli import setting
from keras_astpe.conversion import init_from_vit
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.io_utils import write_json
from keras_astpe.models import ASTBackbone, ASTClassifier
from keras_astpe.serving import export_saved_model
from keras_astpe.spec_augment import SpecAugmentConfig
from keras_astpe.training import distribution, outputs, resumption, throughput, trainer
from keras_astpe.training.metrics import classification_metrics, tagging_metrics
from keras_astpe.training.plots import (
    plot_confusion_matrix,
    plot_learning_curves,
    plot_per_class_ap,
)
from keras_astpe.training.run_store import IntervalCheckpoint, RunStore, restore_latest
from keras_astpe.training.schedules import InverseSqrtSchedule, WarmupExponentialDecay
from keras_astpe.training.selection import BestCheckpoint
from keras_astpe.training.swa import StochasticWeightAveraging

SCHEDULES = ("exponential", "inverse_sqrt", "constant")
# The final model: the SWA of the last checkpoints, or the best one on the validation split.
SELECTIONS = ("swa", "best")
TRAINABLE = ("all", "head")
_PAPER_MASKS = SpecAugmentConfig()
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}
# Settings that may change between the starts of a run without changing it (recorded in
# the `starts` of run_config.json): under global-batch semantics, the number of replicas;
# the compilation; whether the end of the run writes the TF Serving export.
PER_START = ("distribute", "jit_compile", "export")
# A `.keras` model to fine-tune; any other `--init` is ImageNet ViT weights.
KERAS_MODEL_SUFFIX = ".keras"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(trainer.RecipeConfig):
    """Settings of a training run; each field is a flag of the recipes that train.

    Subclasses set other defaults by named configurations (`CONFIGS`, chosen with
    `--config`; see `keras_astpe.cli`), so every setting has one default.
    """

    pe: str | None = setting(
        None, choices=keras_astpe.PE_KINDS, help="Positional encoding of a new model (from "
        "scratch or ImageNet weights); a --init .keras model keeps its own.")
    init: str | None = setting(
        None, help="Start from: a .keras model of this project to fine-tune (its head is "
        "replaced when the classes differ), or ImageNet ViT/DeiT weights as AST does (a timm "
        "state dict .pth/.bin/.safetensors/.npz or a keras-hub ViT preset folder, for the "
        "'ast' preset).")
    data_dir: str | None = setting(
        None, help="Converted dataset (TFRecords and dataset.json of tfrecords_tools). "
        "Without it, the recipe's demo data are generated under demo_data/ on first use.")
    preset: str = setting("ast-pe-small", choices=sorted(keras_astpe.PRESETS),
                          help="Model size of a new model.")
    num_layers: int | None = setting(
        None, help="Encoder blocks of a new model (default: the preset's).")
    dropout: float | None = setting(
        None, help="Residual dropout of a new model (default: the preset's).")
    batch_size: int = setting(32, help="Global batch size.")
    train_steps: int = setting(2000, help="Optimizer steps.")
    warmup_steps: int = setting(200, help="Steps of linear learning-rate warm-up.")
    max_lr: float = setting(5e-4, help="Peak learning rate.")
    schedule: str = setting(
        "exponential", choices=SCHEDULES, help="Decay after warm-up: 'exponential' (the "
        "paper's text), 'inverse_sqrt' (the original code: lr proportional to 1/sqrt(step)) "
        "or 'constant' (none).")
    decay_rate: float = setting(
        0.1, help="Exponential schedule: factor the learning rate is multiplied by from the "
        "end of warm-up to the last step (the paper does not give it).")
    decay_every: int = setting(
        0, help="Exponential schedule: decay in stairs of this many steps (0: continuously; "
        "the paper's ESC-50 fine-tuning decays once per epoch).")
    trainable: str = setting(
        "all", choices=TRAINABLE, help="What trains: 'all', or 'head' (the output layer alone, "
        "the backbone frozen: the first stage of the paper's ESC-50 fine-tuning).")
    checkpoint_every: int = setting(
        200, help="Steps between checkpoints (and SWA snapshots); must divide --train_steps. "
        "Also the length of a Keras 'epoch' in the logs.")
    swa_last: int = setting(
        1, help="Number of last checkpoints averaged into the final model (SWA); 1 keeps the "
        "last checkpoint.")
    selection: str = setting(
        "swa", choices=SELECTIONS, help="The final model: 'swa', the average of the last "
        "--swa_last checkpoints; 'best', the checkpoint with the best value on the validation "
        "split (accuracy single-label, Keras' PR-AUC estimate of mAP multi-label), kept "
        "across resumption.")
    train_splits: tuple[str, ...] | None = setting(
        None, help="Splits whose records form the training set (default: every split of "
        "role 'train' in dataset.json).")
    eval_split: str | None = setting(
        None, help="Split the final model is evaluated on (default: the split of role "
        "'test', else 'eval', else 'validation').")
    train_folds: tuple[int, ...] | None = setting(
        None, help="Folds of the training splits to train on (cross-validation data such as "
        "ESC-50's; default: every clip).")
    eval_folds: tuple[int, ...] | None = setting(
        None, help="Folds of the evaluation split to evaluate (and, when it is also the "
        "validation split, validate) on (default: every clip).")
    validation_split: str | None = setting(
        None, help="Split validated on at every checkpoint, which --selection=best chooses "
        "on (default: the split of role 'validation', else 'eval'; without one, "
        "--selection=swa validates on the evaluation split and --selection=best is an "
        "error).")
    output_dir: str | None = setting(
        None, help="Run folder (default: saved_models/<dataset name>/<pe or init model>). "
        "Rerunning with the same folder resumes the run.")
    mixed_precision: bool = setting(
        False, help="Train with the mixed_bfloat16 dtype policy (attention logits, position "
        "biases and softmax stay float32).")
    distribute: str = setting(
        "none", choices=distribution.KINDS, help="Data-parallel training: 'mirrored' "
        "(tensorflow backend: every GPU of this host), 'multi_worker' (tensorflow: the hosts "
        "of TF_CONFIG), 'data_parallel' (jax: every device, across hosts after "
        "jax.distributed.initialize from KERAS_DISTRIBUTION_JOB_ADDRESSES, "
        "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID). --batch_size "
        "stays the global batch and the steps those of one device, so a run may resume on "
        "another number of replicas. See keras_astpe/training/distribution.py.")
    jit_compile: str = setting(
        "auto", choices=tuple(JIT_COMPILE), help="XLA compilation of the training step: "
        "'auto' is Keras' choice (tensorflow: on a GPU without tf.distribute; jax: always; "
        "torch: never), 'true' forces it (torch.compile on torch; not with tf.distribute), "
        "'false' turns it off.")
    export: bool = setting(
        True, help="At the end, also write the TF Serving SavedModel of the final model to "
        "<output_dir>/saved_model/1 (serve with --model_base_path=<output_dir>/saved_model).")
    stats_max_clips: int = setting(
        20000, help="Training clips used to compute the normalization statistics (0: all), "
        "unless --data_dir holds normalization_stats.json.")
    frames: int | None = setting(
        None, help="Frames (10 ms) of each clip's features: AST's front end pads or cuts its "
        "fbank to them (AST's target length), the paper's takes clips of that many frames "
        "(default: the preset's frames for a new model, each clip's own for a fine-tuned "
        "one).")
    fbank_stats: tuple[float, ...] | None = setting(
        None, help="Mean,std of the fbank values that AST's front end normalizes with, "
        "(x - mean) / (2 std) (default: the model's own; AST's AudioSet ones for a new "
        "model). The paper's front end scales by its training set's statistics instead.")
    mask_probability: float = setting(
        _PAPER_MASKS.probability, help="SpecAugment: probability that a training clip is "
        "masked (the paper: 0.5; AST: 1).")
    num_masks: tuple[int, ...] = setting(
        (_PAPER_MASKS.min_masks, _PAPER_MASKS.max_masks), help="SpecAugment: min,max masks "
        "per axis of a masked clip (the paper: 1,2; AST: 1,1).")
    max_freq_mask: int = setting(
        _PAPER_MASKS.max_freq_width, help="SpecAugment: widest frequency mask, in the front "
        "end's masking bins: linear STFT bins for the paper's front end, mel bins for AST's.")
    max_time_mask: int = setting(
        _PAPER_MASKS.max_time_width, help="SpecAugment: widest time mask, in frames.")

    def __post_init__(self):
        if self.init is None and self.pe is None:
            raise ValueError("give --pe (a new model) or --init (a model or weights to start "
                             "from)")
        if self.init is not None and self.init.endswith(KERAS_MODEL_SUFFIX) and self.pe:
            raise ValueError(f"--pe applies to a new model; --init={self.init} keeps its own "
                             "positional encoding")
        if self.init is not None and self.init.endswith(KERAS_MODEL_SUFFIX) and (
                self.num_layers is not None or self.dropout is not None):
            raise ValueError(f"--num_layers and --dropout apply to a new model; --init="
                             f"{self.init} keeps its own")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"--num_layers must be >= 1, got {self.num_layers}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("batch_size", "train_steps", "checkpoint_every", "swa_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or not self.max_lr > 0 or not 0 < self.decay_rate <= 1:
            raise ValueError("need --warmup_steps >= 0, --max_lr > 0 and 0 < --decay_rate <= 1, "
                             f"got {self.warmup_steps}, {self.max_lr}, {self.decay_rate}")
        if self.schedule == "inverse_sqrt" and self.warmup_steps < 1:
            raise ValueError("the inverse_sqrt schedule needs --warmup_steps >= 1")
        if self.decay_every < 0 or (self.decay_every and self.schedule != "exponential"):
            raise ValueError(f"--decay_every must be >= 0, for --schedule=exponential, got "
                             f"{self.decay_every} with --schedule={self.schedule}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"--trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.trainable == "head" and not (self.init and self.init.endswith(
                KERAS_MODEL_SUFFIX)):
            raise ValueError("--trainable=head trains the output layer of a pretrained model: "
                             "give --init=MODEL.keras")
        for name in ("train_folds", "eval_folds"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise ValueError(f"--{name} is empty: leave it out for every clip")
        if self.train_steps % self.checkpoint_every:
            raise ValueError(f"--checkpoint_every ({self.checkpoint_every}) must divide "
                             f"--train_steps ({self.train_steps})")
        if self.swa_last * self.checkpoint_every > self.train_steps:
            raise ValueError(
                f"--swa_last={self.swa_last} checkpoints every {self.checkpoint_every} steps "
                f"need --train_steps >= {self.swa_last * self.checkpoint_every}, got "
                f"{self.train_steps}")
        if self.train_splits is not None and not self.train_splits:
            raise ValueError("--train_splits is empty: leave it out for every training split")
        if self.stats_max_clips < 0:
            raise ValueError(f"--stats_max_clips must be >= 0, got {self.stats_max_clips}")
        if self.selection == "best" and self.swa_last > 1:
            raise ValueError("--swa_last averages checkpoints for --selection=swa; "
                             "--selection=best keeps one checkpoint")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames}")
        if self.fbank_stats is not None and (len(self.fbank_stats) != 2
                                             or not self.fbank_stats[1] > 0):
            raise ValueError(f"--fbank_stats must be mean,std with std > 0, got "
                             f"{','.join(map(str, self.fbank_stats))}")
        if not (len(self.num_masks) == 2 and 0 <= self.num_masks[0] <= self.num_masks[1]):
            raise ValueError(f"--num_masks must be min,max with 0 <= min <= max, got "
                             f"{','.join(map(str, self.num_masks))}")
        if not 0 <= self.mask_probability <= 1:
            raise ValueError(f"--mask_probability must be in [0, 1], got "
                             f"{self.mask_probability}")
        for name in ("max_freq_mask", "max_time_mask"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        distribution.check_backend(self.distribute)
        distribution.check_jit_compile(self.distribute, JIT_COMPILE[self.jit_compile])

    @property
    def num_intervals(self):
        return self.train_steps // self.checkpoint_every

    @property
    def spec_augment(self):
        """The SpecAugment of the training clips."""
        return SpecAugmentConfig(probability=self.mask_probability,
                                 min_masks=self.num_masks[0], max_masks=self.num_masks[1],
                                 max_freq_width=self.max_freq_mask,
                                 max_time_width=self.max_time_mask)

    @property
    def model_name(self):
        """The positional encoding of a new model, or the folder of the `--init` model."""
        if self.init is not None and self.init.endswith(KERAS_MODEL_SUFFIX):
            return os.path.basename(os.path.dirname(os.path.abspath(self.init)))
        return self.pe

def learning_rate_schedule(config):
    """The learning-rate schedule of `config` (warm-up to `max_lr`, then decay)."""
    if config.schedule == "inverse_sqrt":
        return InverseSqrtSchedule(config.max_lr, config.warmup_steps)
    return WarmupExponentialDecay(
        config.max_lr, config.warmup_steps,
        decay_steps=max(1, config.train_steps - config.warmup_steps),
        decay_rate=config.decay_rate if config.schedule == "exponential" else 1.0,
        staircase_steps=config.decay_every or None)


def _first_with_clips(info, roles):
    """The first split holding clips of the first of `roles` that has one, or None (a
    converter writes a split that no clip falls in, empty)."""
    return next((split for role in roles for split in info.splits_with_role(role)
                 if info.num_clips(split)), None)


def evaluation_split(info, eval_split=None):
    """The split a run is evaluated on: `eval_split`, else that of role `test`, `eval`, then
    `validation` (holding clips); a clear error when the data have none."""
    if eval_split is not None:
        info.split(eval_split)  # names the splits there are when it is not one
        return eval_split
    split = _first_with_clips(info, ("test", "eval", "validation"))
    if split is not None:
        return split
    raise ValueError(f"{info.data_dir} has no split to evaluate on (its splits: "
                     f"{sorted(info.splits)}): convert it with a validation or test split "
                     "(tfrecords_tools: --validation_percent, --test_percent) or pass "
                     "--eval_split")


def _split_sizes(info):
    return ", ".join(f"{split} {info.num_clips(split)}" for split in sorted(info.splits))


def validation_split(info, eval_split, *, selection, given=None):
    """`(split, note)`: the split a run validates on at every checkpoint (`given`, else that
    of role `validation`, else `eval`, holding clips) and a line to print about it, or None.

    Without one, `selection="best"` is an error (choosing on the evaluation split would
    make its figure optimistic) and `"swa"` validates on `eval_split` (the logs only).
    """
    if given is not None:
        info.split(given)  # names the splits there are when it is not one
        split = given
    else:
        split = _first_with_clips(info, ("validation", "eval"))
    if split is None and selection == "best":
        raise ValueError(f"{info.data_dir} has no validation split with clips (its splits: "
                         f"{_split_sizes(info)}) to choose the best checkpoint on: convert "
                         "it with one (tfrecords_tools: --validation_percent), pass "
                         "--validation_split, or --selection=swa")
    if split is None:
        return eval_split, (f"No validation split in {info.data_dir}: validating on "
                            f"{eval_split!r}, the evaluation split (logs only: the final "
                            "model is the SWA of the last checkpoints)")
    if split == eval_split and selection == "best":
        return split, (f"Note: the best checkpoint is chosen on {split!r}, the split it is "
                       "evaluated on, so its figure is optimistic (convert the data with a "
                       "test split: --test_percent)")
    return split, None


def training_splits(info, train_splits=None):
    """`train_splits`, else every split of role `train`; an error when there is none."""
    splits = tuple(train_splits or info.splits_with_role("train"))
    if not splits:
        raise ValueError(f"{info.data_dir} has no training split (its splits: "
                         f"{sorted(info.splits)}): pass --train_splits")
    return splits


def train(config, verbose="auto", log=print):
    """Trains (or resumes), averages, evaluates and writes the run folder of `config`.

    `config.data_dir` must be a converted dataset. Writes in the run folder: `model.keras`
    (the final model, carrying its front end, statistics and class names), `metrics.json`
    (the metrics of the final model and of the last checkpoint on the evaluation split,
    chance, config), per-class metrics (CSV and plot), a confusion matrix (single-label),
    `learning_curves.png`, `training_log.csv`, `tensorboard/`, the TF Serving export, and
    the resumable state `checkpoints/`, `swa/`, `run_config.json`.

    Returns:
        The content of `metrics.json`, plus `output_dir`; on the other workers of a
        distributed run, `output_dir`, `worker` and `distribution`.
    """
    run = _open_run(config, log)
    model, selector, initial_epoch = _model_at_its_last_checkpoint(run)
    eval_dataset = run.make(run.eval_files, training=False, num_clips=run.eval_clips,
                            folds=config.eval_folds)
    validation_dataset = eval_dataset if run.validation_split == run.eval_split else run.make(
        run.info.split_files(run.validation_split), training=False,
        num_clips=run.info.num_clips(run.validation_split))
    _fit(run, model, selector, initial_epoch, validation_dataset, verbose)
    if not run.dist.is_chief:
        run.dist.barrier()  # the chief's evaluation: JAX ends a process only with the others
        return {"output_dir": run.dir, "worker": run.dist.worker_index,
                "distribution": run.dist.record()}
    model = run.dist.local_model(model)
    if config.selection == "best":
        selector.apply_to(model)  # the best checkpoint on the validation split
    else:
        selector.apply_average(model)  # the average of the last `swa_last` checkpoints
    results = _evaluate_and_write(run, model, selector, eval_dataset)
    run.dist.barrier()
    return {**results, "output_dir": run.dir}


@dataclasses.dataclass
class _Run:
    """What every phase of a run shares."""

    config: TrainConfig
    dist: distribution.Distribution
    dir: str
    info: DatasetInfo
    train_files: list
    eval_split: str
    eval_files: list
    eval_clips: int  # of the evaluated folds
    validation_split: str
    pretrained: keras.Model | None  # the --init .keras model, to fine-tune
    converter: keras.layers.Layer
    clip_samples: int
    skips: trainer.SkipCounter
    make: object  # `trainer.dataset_maker` of the run
    say: object  # the chief's log; silent on the other workers
    start_time: float


def _open_run(config, log):
    """Starts the distribution, checks the run folder holds this run (the chief creates it)
    and resolves the front end with the run's statistics."""
    start_time = time.monotonic()
    dist = distribution.start(config.distribute)
    dist.check_batch(config.batch_size)
    run_dir = os.fspath(config.output_dir or os.path.join(
        "saved_models", os.path.basename(os.path.abspath(config.data_dir)), config.model_name))
    info = DatasetInfo.load(config.data_dir)
    train_splits = training_splits(info, config.train_splits)
    train_files = [path for split in train_splits for path in info.split_files(split)]
    eval_split = evaluation_split(info, config.eval_split)
    eval_clips = _clips_of_folds(info, eval_split, config.eval_folds)
    if eval_split in train_splits and (
            config.train_folds is None or config.eval_folds is None
            or set(config.train_folds) & set(config.eval_folds)):
        raise ValueError(f"{eval_split!r} is both a training and the evaluation split: give "
                         "disjoint --train_folds and --eval_folds of it, or another --eval_split")
    val_split, note = validation_split(info, eval_split, selection=config.selection,
                                       given=config.validation_split)
    if note and dist.is_chief:
        log(note)
    identity = {**config.to_dict(), "output_dir": None,
                "data_dir": os.path.abspath(config.data_dir),
                "num_train_shards": len(train_files), "num_classes": info.num_classes}
    for key in PER_START:
        identity.pop(key)
    pretrained = None
    if config.init is not None and config.init.endswith(KERAS_MODEL_SUFFIX):
        pretrained = load_classifier(config.init)
    skips = trainer.SkipCounter()

    def front_end():
        if pretrained is not None:  # the model's own, with its statistics, on whole clips
            converter = trainer.with_own_frames(pretrained.audio_converter)
        else:
            converter = trainer.preset_converter(
                config.preset, run_dir, train_files, skips, stats_source=config.data_dir,
                stats_max_clips=config.stats_max_clips or None,
                skip_bad_records=config.data.skip_bad_records, log=log)
        return _with_frames_and_stats(converter, config)

    def open_folder():
        trainer.prepare_output_dir(run_dir)
        RunStore(run_dir).open(identity)
        return front_end()

    converter = _on_chief_first(dist, open_folder)
    if not dist.is_chief:
        converter = front_end()  # with the chief's statistics, from the run folder
    dist.check_same("the run's settings", distribution.settings_digest(identity))
    if pretrained is not None and config.frames is None:
        # the dataset's clips, whatever the pretraining length
        clip_samples = int(round(info.clip_seconds * converter.sample_rate))
    else:
        clip_samples = trainer.clip_samples(
            converter, config.frames or keras_astpe.get_preset(config.preset)["num_frames"],
            info.clip_seconds)
    make = trainer.dataset_maker(
        num_classes=info.num_classes, multi_label=info.multi_label,
        batch_size=config.batch_size, clip_samples=clip_samples, converter=converter,
        options=config.data, skips=skips)
    return _Run(config, dist, run_dir, info, train_files, eval_split,
                info.split_files(eval_split), eval_clips, val_split, pretrained, converter,
                clip_samples, skips, make, log if dist.is_chief else (lambda message: None),
                start_time)


def _clips_of_folds(info, split, folds):
    """Clips of `folds` of `split` (all its clips for None); an error when there are none."""
    if folds is None:
        return info.num_clips(split)
    per_fold = info.clips_per_fold(split)
    clips = sum(per_fold.get(fold, 0) for fold in folds)
    if not clips:
        raise ValueError(f"folds {list(folds)} of {split!r} in {info.data_dir} hold no clip "
                         f"(clips per fold: {per_fold})")
    return clips


def _with_frames_and_stats(converter, config):
    """`converter` with `config.frames` as AST's target length and `config.fbank_stats` as
    its normalization; the paper's front end as it is (its frames are those of the clips
    it gets, its statistics the training set's)."""
    settings = converter.get_config()
    inner = settings.get("config")
    if not (isinstance(inner, dict) and "target_frames" in inner):  # not AST's front end
        if config.fbank_stats is not None:
            raise ValueError("--fbank_stats applies to AST's kaldi_fbank front end; this "
                             "model's front end scales by its training set's statistics")
        return converter
    if config.frames is not None:
        inner = {**inner, "target_frames": config.frames}
    if config.fbank_stats is not None:
        inner = {**inner, "mean": config.fbank_stats[0], "std": config.fbank_stats[1]}
    return type(converter).from_config({**settings, "config": inner})


def load_classifier(path):
    """The `ASTClassifier` saved at `path`, with the front end it scores audio with."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--init={path}: model file not found")
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(getattr(model, "backbone", None), ASTBackbone):
        raise ValueError(f"--init={path} is not a keras_astpe ASTClassifier model.")
    if model.audio_converter is None:
        raise ValueError(f"--init={path} carries no audio converter: attach its training "
                         "statistics with keras_astpe.attach_audio_converter and save it again")
    return model


def fine_tuning_classifier(pretrained, info, converter):
    """A classifier of `info`'s classes on `pretrained`'s backbone: its head too when the
    classes and the labelling are the same, else a new head of the same kind."""
    activation = "sigmoid" if info.multi_label else "softmax"
    same = (tuple(pretrained.class_names or ()) == tuple(info.class_names)
            and pretrained.activation == activation)
    if same:
        model = ASTClassifier.from_config(pretrained.get_config())
        model.set_weights(pretrained.get_weights())
        return model
    return ASTClassifier(pretrained.backbone, info.num_classes, activation=activation,
                         audio_converter=converter, class_names=info.class_names,
                         head_norm=pretrained.head_norm is not None,
                         head_norm_epsilon=pretrained.head_norm_epsilon)


def _build(run):
    """A new compiled classifier of the run: from scratch, from ViT weights, or on the
    `--init` model's backbone (a resumed run then loads its checkpoint over it)."""
    config, info = run.config, run.info
    keras.utils.set_random_seed(config.seed)
    overrides = {"dtype": "mixed_bfloat16"} if config.mixed_precision else {}
    if config.frames is not None:  # position tables learned for the clips it trains on
        overrides["num_frames"] = config.frames
    overrides.update({name: getattr(config, name) for name in ("num_layers", "dropout")
                      if getattr(config, name) is not None})
    with run.dist.scope():
        if run.pretrained is not None:
            model = fine_tuning_classifier(run.pretrained, info, run.converter)
        else:
            model = keras_astpe.build_model(
                config.pe, preset=config.preset, num_classes=info.num_classes,
                activation="sigmoid" if info.multi_label else "softmax",
                audio_converter=run.converter, class_names=info.class_names, **overrides)
            if config.init:
                run.say(init_from_vit(model, config.init).describe())
        if config.trainable == "head":
            model.backbone.trainable = False
        return trainer.compile_classifier(
            model, learning_rate_schedule(config), jit_compile=JIT_COMPILE[config.jit_compile],
            distribution=run.dist)


def _model_at_its_last_checkpoint(run):
    """`(model, selector, initial_epoch)`: the model at the newest intact checkpoint whose
    SWA snapshots (or best checkpoint) are intact too (a new one at step 0), and the
    callback that makes the final model: `StochasticWeightAveraging` or `BestCheckpoint`."""
    config, dist = run.config, run.dist
    model = _build(run)
    store = RunStore(run.dir)
    # Set after `fit` in the chief's copy of the model (a distributed model is not the
    # chief's alone to assign to).
    if config.selection == "best":
        selector = BestCheckpoint(f"val_{headline_metric(run.info)}",
                                  state_dir=os.path.join(run.dir, "best"))
    else:
        selector = StochasticWeightAveraging(config.checkpoint_every, config.swa_last,
                                             state_dir=os.path.join(run.dir, "swa"),
                                             final_step=config.train_steps,
                                             apply_at_end=False)
    with dist.scope():
        step, fell_back = _resume(model, store.checkpoints, selector, run.say)
    if step == 0 and fell_back:  # a failed load may have changed some weights
        model = _build(run)
    dist.check_same("the step to resume from", step)
    if step % config.checkpoint_every:
        raise ValueError(f"{store.checkpoints} holds a checkpoint at step {step}, not a multiple "
                         f"of --checkpoint_every={config.checkpoint_every}")
    if step:
        run.say(f"Resuming {run.dir} from step {step}")
    initial_epoch = step // config.checkpoint_every
    if dist.is_chief:
        store.truncate_log(initial_epoch)
        store.record_start({
            "step": step, **dist.record(), "jit_compile": config.jit_compile,
            "export": config.export, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return model, selector, initial_epoch


def headline_metric(info):
    """The metric of `info`'s labels that the best checkpoint and a tuning trial are chosen
    by: mAP (multi-label) or accuracy (single-label), a compiled metric and a result key."""
    return "mAP" if info.multi_label else "accuracy"


def _fit(run, model, selector, initial_epoch, validation_dataset, verbose):
    """Trains from `initial_epoch` to the end: each worker reads its share of the clips of
    every global batch, each interval seeded from its index."""
    config, dist = run.config, run.dist
    input_batch = dist.input_batch(config.batch_size)

    def make_training(seed, count_skips=True):
        return run.make(run.train_files, training=True, deterministic=True, seed=seed,
                        folds=config.train_folds, batch_size=input_batch,
                        shard_count=dist.num_workers, shard_index=dist.worker_index,
                        count_skips=count_skips,
                        spec_augment=config.spec_augment)

    training = initial_epoch < config.num_intervals
    input_wait = throughput.InputWait()
    worker_dataset = input_wait.wrap(resumption.interval_dataset(
        lambda k: make_training(resumption.derive_seed(config.seed, k, 1)),
        initial_epoch if training else 0, config.num_intervals if training else 1,
        config.checkpoint_every * dist.batches_per_step if training else 1))
    run.say(dist.describe(config.batch_size))
    if training:
        parameters = f"{model.count_params():,} parameters"
        if run.pretrained is None:
            what = f"Training {config.pe} ({config.preset}, {parameters})"
        elif config.trainable == "head":
            trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            what = f"Training the output layer of {config.init} ({trainable:,} of {parameters})"
        else:
            what = f"Fine-tuning {config.init} ({parameters})"
        run.say(f"{what} for {config.train_steps} steps: {config.num_intervals} intervals of "
                f"{config.checkpoint_every} steps, batch {config.batch_size}")
        if dist.is_chief:
            _report_input_rate(run, make_training(resumption.derive_seed(config.seed, 3),
                                                  count_skips=False), input_batch)
    else:
        run.say(f"{run.dir}: training already complete at step "
                f"{initial_epoch * config.checkpoint_every}")
    # The other workers run the same callbacks (under tf.distribute, saving may create a
    # variable, which is a collective) but write to a scratch folder; the chief alone keeps
    # the SWA snapshots and validates (neither involves the other workers).
    with contextlib.nullcontext(run.dir) if dist.is_chief else RunStore.scratch() as writes:
        callbacks = _callbacks(run, model, selector, input_wait, validation_dataset, writes)
        dist.prepare(model, worker_dataset)
        with dist.scope():
            model.fit(dist.distribute(lambda: worker_dataset), epochs=config.num_intervals,
                      shuffle=False, steps_per_epoch=config.checkpoint_every,
                      initial_epoch=initial_epoch,
                      validation_data=validation_dataset if dist.kind == "none" else None,
                      callbacks=callbacks, verbose=verbose if dist.is_chief else 0)


def _report_input_rate(run, dataset, input_batch):
    rate = throughput.probe_input(dataset, input_batch)
    if rate is not None:
        share = " (this worker's share)" if run.dist.num_workers > 1 else ""
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count())
        run.say(f"Input pipeline alone{share}: {rate:.1f} clips/s on {cores} CPU cores")


def _callbacks(run, model, selector, input_wait, validation_dataset, writes):
    """The callbacks of `fit`, the checkpoint last (a checkpoint implies a logged epoch);
    the best checkpoint's after the validation logs."""
    config, dist = run.config, run.dist
    callbacks = [resumption.DropoutReseed(resumption.derive_seed(config.seed, 2),
                                          distribution=dist)]
    if dist.is_chief and config.selection == "swa":
        callbacks.append(selector)
    callbacks += [throughput.Throughput(config.batch_size, input_wait),
                  outputs.LogLearningRate()]
    if dist.is_chief and dist.kind != "none":
        callbacks.append(distribution.LocalValidation(
            dist, dist.local_model(model), validation_dataset,
            model.default_loss(), model.default_metrics()))
    if dist.is_chief and config.selection == "best":
        callbacks.append(selector)
    return callbacks + [
        keras.callbacks.CSVLogger(os.path.join(writes, "training_log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(writes, "tensorboard")),
        IntervalCheckpoint(RunStore(writes).checkpoints)]


def _evaluate_and_write(run, model, selector, eval_dataset):
    """Saves and exports the final model, evaluates it and the last checkpoint on the
    evaluation split, and writes the metrics, per-class tables and plots; returns the
    content of metrics.json."""
    config, info, split = run.config, run.info, run.eval_split
    model_path = outputs.save_model(model, os.path.join(run.dir, "model.keras"))
    export_path = None
    if config.export:
        run.say("Exporting the TF Serving SavedModel")
        export_path = os.path.join(run.dir, "saved_model", "1")
        export_saved_model(model_path, export_path, overwrite=True)
    num_clips = run.eval_clips
    if config.selection == "best":
        selected = {"step": selector.best_step or config.train_steps,
                    "monitor": selector.monitor, "value": selector.best_value,
                    "history": [list(entry) for entry in selector.history]}
        final = f"the best checkpoint (step {selected['step']})"
    else:
        selected = {"swa_steps": list(selector.snapshot_steps)}
        final = "the SWA model" if config.swa_last > 1 else "the final model"
    y_true, scores = outputs.predict(model, eval_dataset, num_clips,
                                     description=f"Evaluating {final} on {split}")
    if selected.get("step") == config.train_steps:  # the best is the last checkpoint
        last_scores = scores
    else:
        final_weights = model.get_weights()
        model.set_weights(selector.last_weights)
        _, last_scores = outputs.predict(model, eval_dataset, num_clips,
                                         description=f"Evaluating the last checkpoint (step "
                                                     f"{config.train_steps}) on {split}")
        model.set_weights(final_weights)
    score = _multi_label_results if info.multi_label else _single_label_results
    results = score(run, y_true, scores, last_scores)
    results.update({
        "eval_split": split,
        "num_eval_clips": int(len(y_true)),
        "num_classes": info.num_classes,
        "validation_split": run.validation_split,
        **({"best_checkpoint": selected} if config.selection == "best" else selected),
        "skipped_bad_records": run.skips.counts(),
        "num_parameters": int(model.count_params()),
        "backend": keras.backend.backend(),
        "distribution": run.dist.record(),
        "wall_time_seconds_this_process": round(time.monotonic() - run.start_time, 1),
        "config": {**config.to_dict(), "data_dir": os.path.abspath(config.data_dir),
                   "clip_samples": run.clip_samples},
        "normalization": trainer.normalization_record(run.converter),
        "model": model_path,
        "saved_model": export_path,
    })
    write_json(os.path.join(run.dir, "metrics.json"), results)
    log_path = os.path.join(run.dir, "training_log.csv")
    if os.path.exists(log_path):
        plot_learning_curves(outputs.read_training_log(log_path, config.checkpoint_every),
                             os.path.join(run.dir, "learning_curves.png"),
                             title=f"{info.name} training, {config.model_name}")
    return results


def _multi_label_results(run, y_true, scores, last_scores):
    """mAP, AUC, d-prime (and chance mAP) with the per-class AP table and plot."""
    info = run.info
    metrics, last = tagging_metrics(y_true, scores), tagging_metrics(y_true, last_scores)
    positives = y_true.sum(axis=0)
    rows = [("index", "class_name", "AP", "AUC", "eval_positives")]
    for index, name in enumerate(info.class_names):
        ap, auc = metrics["per_class"]["AP"][index], metrics["per_class"]["AUC"][index]
        rows.append((index, name, "" if np.isnan(ap) else f"{ap:.6f}",
                     "" if np.isnan(auc) else f"{auc:.6f}", int(positives[index])))
    outputs.write_csv(os.path.join(run.dir, "per_class_ap.csv"), rows)
    # sklearn's AP can exceed 1 by a rounding error.
    plot_per_class_ap(np.clip(metrics["per_class"]["AP"], 0.0, 1.0), info.class_names,
                      os.path.join(run.dir, "per_class_ap.png"),
                      title=f"Per-class AP, {run.config.model_name} ({run.eval_split})")
    return {"mAP": metrics["mAP"], "AUC": metrics["AUC"], "d_prime": metrics["d_prime"],
            "last_checkpoint": {"step": run.config.train_steps, "mAP": last["mAP"],
                                "AUC": last["AUC"], "d_prime": last["d_prime"]},
            "chance_mAP": float(np.mean((positives / len(y_true))[positives > 0])),
            "classes_without_positives": metrics["num_excluded_ap"]}


def _single_label_results(run, y_true, scores, last_scores):
    """Accuracy (and chance: the most frequent class), per-class accuracy and the
    confusion matrix, as CSV files and plots."""
    info = run.info
    labels = y_true.argmax(axis=1)
    metrics = classification_metrics(labels, scores)
    last = classification_metrics(labels, last_scores)
    confusion = metrics["confusion_matrix"]
    clips = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), clips, out=np.full(len(clips), np.nan),
                          where=clips > 0)
    outputs.write_csv(os.path.join(run.dir, "per_class_accuracy.csv"),
                      [("index", "class_name", "accuracy", "eval_clips"),
                       *((index, name, "" if np.isnan(accuracy) else f"{accuracy:.6f}",
                          int(count)) for index, (name, accuracy, count)
                         in enumerate(zip(info.class_names, per_class, clips, strict=True)))])
    outputs.write_csv(os.path.join(run.dir, "confusion_matrix.csv"),
                      [["true \\ predicted", *info.class_names],
                       *([name, *row.tolist()]
                         for name, row in zip(info.class_names, confusion, strict=True))])
    plot_confusion_matrix(confusion, info.class_names,
                          os.path.join(run.dir, "confusion_matrix.png"),
                          title=f"{info.name}, {run.config.model_name} ({run.eval_split})")
    return {"accuracy": metrics["accuracy"],
            "last_checkpoint": {"step": run.config.train_steps,
                                "accuracy": last["accuracy"]},
            "confusion_matrix": confusion.tolist(),
            "chance_accuracy": float(clips.max() / clips.sum()),
            "per_class_accuracy": {name: None if np.isnan(value) else float(value)
                                   for name, value in zip(info.class_names, per_class,
                                                          strict=True)}}


def _on_chief_first(dist, work):
    """Runs `work()` on the chief while the other workers wait; returns its result (None
    elsewhere). An error on the chief is raised there and, as a one-line error, on the
    others (they would otherwise wait for it forever)."""
    result = None
    if dist.is_chief:
        try:
            result = work()
        except Exception:
            dist.gather(1)
            raise
    if any(dist.gather(0)):
        raise RuntimeError("worker 0 (the chief) failed to open the run: see its output")
    return result


def _resume(model, checkpoint_dir, selector, log):
    """Restores the newest intact checkpoint whose needed SWA snapshots (or best checkpoint:
    `selector.damaged_snapshots`) are intact too.

    Returns `(step, fell_back)`: the step resumed from (0: from scratch) and whether a
    damaged file was passed over (then a step of 0 needs a freshly built model).
    """
    before, fell_back = None, False
    while True:
        step, damaged = restore_latest(model, checkpoint_dir, before=before, log=log)
        fell_back = fell_back or bool(damaged)
        bad = selector.damaged_snapshots(step)
        if not bad:
            if fell_back and step == 0:
                log("No intact checkpoint to resume from: training starts over from step 0 "
                    "(the run is deterministic: it ends as an uninterrupted run would).")
            return step, fell_back
        for _, error in bad:
            log(f"Warning: {error}. The final model needs it: training goes back to a "
                "checkpoint before it and makes it again.")
        fell_back, before = True, min(snapshot for snapshot, _ in bad)


def summary(results):
    """The lines a training recipe prints at the end of a run."""
    if "worker" in results:
        record = results["distribution"]
        return (f"Worker {results['worker']} of {record['num_workers']} done; worker 0 "
                f"writes the results in {results['output_dir']}.")
    out, last = results["output_dir"], results["last_checkpoint"]
    config, split = results["config"], results["eval_split"]
    name = config["pe"] or os.path.basename(os.path.dirname(os.path.abspath(config["init"])))
    best = results.get("best_checkpoint")
    if best is not None:
        value = ("" if best["value"] is None else
                 f"{100 * best['value']:.1f}%" if "accuracy" in best["monitor"]
                 else f"{best['value']:.3f}")
        final = (f"the model at step {best['step']}, the best of {len(best['history'])} "
                 f"checkpoints on {results['validation_split']} "
                 f"({best['monitor'].removeprefix('val_')} {value})")
    else:
        final = (f"SWA of steps {results['swa_steps']}" if config["swa_last"] > 1
                 else f"the model at step {last['step']}")
    if "mAP" in results:
        lines = [
            f"{name}: {split} mAP {results['mAP']:.3f} (chance {results['chance_mAP']:.3f}), "
            f"AUC {results['AUC']:.3f}, d' {results['d_prime']:.3f} on "
            f"{results['num_eval_clips']} clips; {final}.",
            f"Last checkpoint (step {last['step']}) alone: mAP {last['mAP']:.3f}, AUC "
            f"{last['AUC']:.3f}, d' {last['d_prime']:.3f}."]
        tables = [f"per-class AP: {os.path.join(out, 'per_class_ap.csv')}"]
        plots = ["per_class_ap.png"]
    else:
        lines = [
            f"{name}: {split} accuracy {100 * results['accuracy']:.1f}% (chance "
            f"{100 * results['chance_accuracy']:.1f}%) on {results['num_eval_clips']} clips; "
            f"{final}.",
            f"Last checkpoint (step {last['step']}) alone: accuracy "
            f"{100 * last['accuracy']:.1f}%."]
        tables = [f"per-class accuracy: {os.path.join(out, 'per_class_accuracy.csv')}"]
        plots = ["confusion_matrix.png"]
    if (config["swa_last"] == 1 if best is None else best["step"] == last["step"]):
        lines = lines[:1]
    skipped = {k: v for k, v in results["skipped_bad_records"].items() if v}
    if skipped:
        lines.append("Skipped bad records: " + ", ".join(
            f"{count} in {purpose}" for purpose, count in skipped.items()))
    lines += [
        f"Model: {os.path.join(out, 'model.keras')}"
        + (f"; TF Serving export: {results['saved_model']}" if results["saved_model"] else ""),
        f"Metrics: {os.path.join(out, 'metrics.json')}, " + ", ".join(tables),
        "Plots: " + ", ".join(os.path.join(out, name)
                              for name in ("learning_curves.png", *plots)),
        f"TensorBoard: tensorboard --logdir={os.path.join(out, 'tensorboard')}",
    ]
    return "\n".join(lines)
