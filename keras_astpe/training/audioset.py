"""AudioSet training of the AST-PE study (SPEC section 5), resumable, with SWA.

    config = AudioSetConfig.create("time_alibi", data_dir="data/audioset")  # paper settings
    results = train_audioset(config)

Training set: the `balanced_train` and `unbalanced_train` records; evaluation: `eval`.
Adam with gradient clipping by value 1, binary cross-entropy, linear warm-up then decay,
a checkpoint every `checkpoint_every` steps, and the average of the last `swa_last`
checkpoints (SWA) as the final model, evaluated with mAP, AUC and d-prime next to the last
checkpoint.

A run lives in its output folder. Rerunning the same command after an interruption (even
SIGKILL) resumes from the newest intact checkpoint with the optimizer and SWA state, and
ends with the model an uninterrupted run would have (see `resumption`).
"""

import dataclasses
import os
import shutil
import tempfile
import time

import keras
import numpy as np

import keras_astpe
from keras_astpe.cli import setting
from keras_astpe.conversion import init_from_vit
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.io_utils import write_json
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models import get_front_end
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter, LogMelAudioConverter
from keras_astpe.serving import export_saved_model
from keras_astpe.training import distribution, outputs, resumption, throughput, trainer
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
# synthetic demo data in a few minutes on 2 CPU cores.
# SWA does not help a run this short, still improving at a learning rate already decayed
# 10x (README, "SWA on the demo"): the demo averages its last 3 checkpoints, 50 steps apart.
DEMO_DEFAULTS = {
    "preset": "ast-pe-tiny", "batch_size": 32, "train_steps": 800, "warmup_steps": 100,
    "max_lr": 2e-3, "checkpoint_every": 50, "swa_last": 3,
}
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}
# Settings that may change between the starts of a run without changing it (recorded in
# the `starts` of run_config.json): under global-batch semantics, the number of replicas;
# the compilation; whether the end of the run writes the TF Serving export.
PER_START = ("distribute", "jit_compile", "export")


def _mode_defaults(name):
    return {"with --data_dir": PAPER_DEFAULTS[name], "for the demo": DEMO_DEFAULTS[name]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AudioSetConfig:
    """Settings of an AudioSet training run; `create` fills in the mode's defaults (the
    paper's with a `data_dir`, the demo's without), and each field is a flag of
    `recipes/train_audioset.py`."""

    pe: str = setting(help="Positional encoding.", choices=keras_astpe.PE_KINDS,
                      required=True)
    data_dir: str | None = setting(
        None, help="Folder of AudioSet TFRecords written by tfrecords_tools.audioset. "
        "Without it, the demo data are generated under demo_data/ on first use.")
    preset: str | None = setting(None, help="Model size.", choices=sorted(keras_astpe.PRESETS),
                                 defaults=_mode_defaults("preset"))
    batch_size: int | None = setting(
        None, help="Global batch size; learned_relative uses 32 with --data_dir, as in the "
        "paper.", defaults=_mode_defaults("batch_size"))
    train_steps: int | None = setting(
        None, help="Optimizer steps; learned_relative uses 470000 with --data_dir, as in the "
        "paper.", defaults=_mode_defaults("train_steps"))
    warmup_steps: int | None = setting(None, help="Steps of linear learning-rate warm-up.",
                                       defaults=_mode_defaults("warmup_steps"))
    max_lr: float | None = setting(None, help="Peak learning rate.",
                                   defaults=_mode_defaults("max_lr"))
    schedule: str = setting(
        "exponential", choices=SCHEDULES, help="Decay after warm-up: 'exponential' (the "
        "paper's text) or 'inverse_sqrt' (the original code: lr proportional to 1/sqrt(step)).")
    decay_rate: float = setting(
        0.1, help="Exponential schedule: factor the learning rate is multiplied by from the "
        "end of warm-up to the last step (the paper does not give it).")
    checkpoint_every: int | None = setting(
        None, help="Steps between checkpoints (and SWA snapshots); must divide "
        "--train_steps. Also the length of a Keras 'epoch' in the logs.",
        defaults=_mode_defaults("checkpoint_every"))
    swa_last: int | None = setting(
        None, help="Number of last checkpoints averaged into the final model (SWA).",
        defaults=_mode_defaults("swa_last"))
    train_splits: tuple[str, ...] = setting(
        TRAIN_SPLITS, help="Splits of --data_dir whose records form the training set "
        "(evaluation always uses 'eval').")
    output_dir: str | None = setting(
        None, help="Run folder (default: saved_models/audioset/<pe>, or "
        "saved_models/audioset-demo/<pe> for the demo). Rerunning with the same folder "
        "resumes the run.")
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
    init: str | None = setting(
        None, help="ImageNet ViT/DeiT weights to start from, as AST does: a timm state dict "
        "(.pth, .bin, .safetensors, .npz) or a keras-hub ViT preset folder; for the 'ast' "
        "preset (absolute position embeddings, no embedding LayerNorm).")
    export: bool = setting(
        True, help="At the end, also write the TF Serving SavedModel of the final model to "
        "<output_dir>/saved_model/1 (serve with --model_base_path=<output_dir>/saved_model).")
    seed: int = setting(0, help="Seed of initialisation, data order, augmentation, dropout.")
    stats_max_clips: int = setting(
        20000, help="Training clips used to compute the normalization statistics (0: all), "
        "unless --data_dir holds normalization_stats.json.")
    demo_size: str = setting("small", choices=("small", "tiny"),
                             help="Size of the generated demo data (tiny: a few clips, for "
                             "smoke tests).")
    data: trainer.DataOptions = dataclasses.field(default_factory=trainer.DataOptions)

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
            config = dataclasses.replace(
                config, output_dir=os.path.join("saved_models", folder, pe))
        return config

    def __post_init__(self):
        if self.pe not in keras_astpe.PE_KINDS:
            raise ValueError(f"--pe must be one of {keras_astpe.PE_KINDS}, got {self.pe!r}")
        if self.preset not in keras_astpe.PRESETS:
            raise ValueError(f"--preset must be one of {sorted(keras_astpe.PRESETS)}, "
                             f"got {self.preset!r}")
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
        if self.train_steps % self.checkpoint_every:
            raise ValueError(f"--checkpoint_every ({self.checkpoint_every}) must divide "
                             f"--train_steps ({self.train_steps})")
        if self.swa_last * self.checkpoint_every > self.train_steps:
            raise ValueError(
                f"--swa_last={self.swa_last} checkpoints every {self.checkpoint_every} steps "
                f"need --train_steps >= {self.swa_last * self.checkpoint_every}, got "
                f"{self.train_steps}")
        if not self.train_splits:
            raise ValueError("--train_splits is empty")
        if self.stats_max_clips < 0:
            raise ValueError(f"--stats_max_clips must be >= 0, got {self.stats_max_clips}")
        if self.jit_compile not in JIT_COMPILE:
            raise ValueError(f"--jit_compile must be one of {tuple(JIT_COMPILE)}, got "
                             f"{self.jit_compile!r}")
        distribution.check_backend(self.distribute)
        distribution.check_jit_compile(self.distribute, JIT_COMPILE[self.jit_compile])

    @property
    def num_intervals(self):
        return self.train_steps // self.checkpoint_every

    def to_dict(self):
        return dataclasses.asdict(self)


def learning_rate_schedule(config):
    """The learning-rate schedule of `config` (warm-up to `max_lr`, then decay)."""
    if config.schedule == "inverse_sqrt":
        return InverseSqrtSchedule(config.max_lr, config.warmup_steps)
    return WarmupExponentialDecay(config.max_lr, config.warmup_steps,
                                  decay_steps=max(1, config.train_steps - config.warmup_steps),
                                  decay_rate=config.decay_rate)


def train_audioset(config, verbose="auto", log=print):
    """Trains (or resumes), averages, evaluates and writes the run folder of `config`.

    `config.data_dir` must be a converted dataset (the recipe prepares the demo data when
    it is None). Writes in `config.output_dir`: `model.keras` (the SWA model, carrying its
    front end, statistics and class names), `metrics.json` (mAP, AUC, d-prime of the SWA
    model and of the last checkpoint, chance mAP, config), `per_class_ap.csv` / `.png`,
    `learning_curves.png`, `training_log.csv` (per interval: losses, metrics, learning
    rate, clips per second and the time spent waiting for input), `tensorboard/`,
    `normalization_stats.json`, and the resumable state `checkpoints/`, `swa/` and
    `run_config.json`. Under `config.distribute`, every worker runs this function and the
    chief (worker 0) writes the folder (see `distribution`).

    Returns:
        The content of `metrics.json`, plus `output_dir`; on the other workers of a
        distributed run, `output_dir`, `worker` and `distribution`.
    """
    start_time = time.monotonic()
    dist = distribution.start(config.distribute)
    dist.check_batch(config.batch_size)
    chief = dist.is_chief
    say = log if chief else (lambda message: None)
    run_dir = os.fspath(config.output_dir)
    info = DatasetInfo.load(config.data_dir)
    train_files = [path for split in config.train_splits for path in info.split_files(split)]
    eval_files = info.split_files(EVAL_SPLIT)
    num_classes = info.num_classes
    identity = {**config.to_dict(), "output_dir": None,
                "data_dir": os.path.abspath(config.data_dir),
                "num_train_shards": len(train_files), "num_classes": num_classes}
    for key in PER_START:
        identity.pop(key)

    # === Front end, statistics (the chief's: it writes the run folder) and model ===
    preset = keras_astpe.get_preset(config.preset)
    frontend = FrontEndConfig(num_mel_bins=preset["num_mel_bins"])
    kaldi = get_front_end(config.preset) == "kaldi_fbank"  # AST's: fixed statistics
    skips = trainer.SkipCounter()

    def resolve_stats():
        if kaldi:
            return None
        stats, skipped = trainer.resolve_stats(
            run_dir, train_files, frontend, source=config.data_dir,
            max_clips=config.stats_max_clips or None,
            skip_bad_records=config.data.skip_bad_records, log=log)
        skips.add("the statistics pass", skipped)
        return stats

    def open_run():
        trainer.prepare_output_dir(run_dir)
        resumption.RunConfig.check_or_write(run_dir, identity)
        return resolve_stats()

    stats = _on_chief_first(dist, open_run)
    if not chief:
        stats = resolve_stats()  # the chief's, from the run folder
    dist.check_same("the run's settings", distribution.settings_digest(identity))
    if kaldi:  # AST pads (or cuts) the fbank of the clip to the model's frames
        converter = KaldiFbankAudioConverter(KaldiFbankConfig(
            num_mel_bins=preset["num_mel_bins"], target_frames=preset["num_frames"]))
        clip_samples = int(round(info.clip_seconds * converter.sample_rate))
    else:
        converter = LogMelAudioConverter(frontend, stats)
        clip_samples = converter.num_samples(preset["num_frames"])

    def build():
        keras.utils.set_random_seed(config.seed)
        overrides = {"dtype": "mixed_bfloat16"} if config.mixed_precision else {}
        with dist.scope():
            model = keras_astpe.build_model(
                config.pe, preset=config.preset, num_classes=num_classes,
                activation="sigmoid" if info.multi_label else "softmax",
                audio_converter=converter, class_names=info.class_names, **overrides)
            if config.init:  # a resumed run then loads its checkpoint over it
                say(init_from_vit(model, config.init).describe())
            return trainer.compile_classifier(
                model, learning_rate_schedule(config), multi_label=info.multi_label,
                num_classes=num_classes, jit_compile=JIT_COMPILE[config.jit_compile],
                distribution=dist)

    model = build()

    # === Resume from the newest intact checkpoint (and the SWA snapshots it needs) ===
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    # Averaged after `fit`, into the chief's copy of the model (a distributed model is not
    # the chief's alone to assign to).
    swa = StochasticWeightAveraging(config.checkpoint_every, config.swa_last,
                                    state_dir=os.path.join(run_dir, "swa"),
                                    final_step=config.train_steps, apply_at_end=False)
    with dist.scope():
        step, fell_back = _resume(model, checkpoint_dir, swa, say)
    if step == 0 and fell_back:  # a failed load may have changed some weights
        model = build()
    dist.check_same("the step to resume from", step)
    if step % config.checkpoint_every:
        raise ValueError(f"{checkpoint_dir} holds a checkpoint at step {step}, not a multiple "
                         f"of --checkpoint_every={config.checkpoint_every}")
    if step:
        say(f"Resuming {run_dir} from step {step}")
    initial_epoch = step // config.checkpoint_every
    log_path = os.path.join(run_dir, "training_log.csv")
    if chief:
        resumption.truncate_training_log(log_path, initial_epoch)
        resumption.RunConfig.record_start(run_dir, {
            "step": step, **dist.record(), "jit_compile": config.jit_compile,
            "export": config.export, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    # === Datasets: each worker's share of the clips of every global batch ===
    input_batch = dist.input_batch(config.batch_size)
    make = trainer.dataset_maker(
        num_classes=num_classes, multi_label=info.multi_label, batch_size=config.batch_size,
        clip_samples=clip_samples, converter=converter, options=config.data, skips=skips)

    def make_training(seed, count_skips=True):
        return make(train_files, training=True, deterministic=True, seed=seed,
                    batch_size=input_batch, shard_count=dist.num_workers,
                    shard_index=dist.worker_index, count_skips=count_skips)

    def make_interval(k):
        return make_training(resumption.derive_seed(config.seed, k, 1))

    num_eval_clips = info.num_clips(EVAL_SPLIT)
    eval_dataset = make(eval_files, training=False, num_clips=num_eval_clips)
    training = initial_epoch < config.num_intervals
    input_wait = throughput.InputWait()
    worker_dataset = input_wait.wrap(resumption.interval_dataset(
        make_interval, initial_epoch if training else 0,
        config.num_intervals if training else 1,
        config.checkpoint_every * dist.batches_per_step if training else 1))
    train_dataset = dist.distribute(lambda: worker_dataset)
    say(dist.describe(config.batch_size))
    if training:
        say(f"Training {config.pe} ({config.preset}, {model.count_params():,} parameters) "
            f"for {config.train_steps} steps: {config.num_intervals} intervals of "
            f"{config.checkpoint_every} steps, batch {config.batch_size}")
        if chief:
            rate = throughput.probe_input(make_training(
                resumption.derive_seed(config.seed, 3), count_skips=False), input_batch)
            if rate is not None:
                share = " (this worker's share)" if dist.num_workers > 1 else ""
                cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count())
                say(f"Input pipeline alone{share}: {rate:.1f} clips/s on {cores} CPU cores")
    else:
        say(f"{run_dir}: training already complete at step {step}")

    # The other workers run the same callbacks (under tf.distribute, saving may create a
    # variable, which is a collective) but write to a scratch folder; the chief alone keeps
    # the SWA snapshots and validates (neither involves the other workers).
    writes = run_dir if chief else tempfile.mkdtemp(prefix="keras_astpe-worker-")
    callbacks = [resumption.DropoutReseed(resumption.derive_seed(config.seed, 2),
                                          distribution=dist)]
    if chief:
        callbacks.append(swa)
    callbacks += [throughput.Throughput(config.batch_size, input_wait),
                  outputs.LogLearningRate()]
    if chief and dist.kind != "none":
        callbacks.append(distribution.LocalValidation(
            dist, dist.local_model(model), eval_dataset,
            trainer.classifier_loss(info.multi_label),
            trainer.classifier_metrics(info.multi_label, num_classes)))
    callbacks += [
        keras.callbacks.CSVLogger(os.path.join(writes, "training_log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(writes, "tensorboard")),
        resumption.IntervalCheckpoint(os.path.join(writes, "checkpoints"))]
    dist.prepare(model, worker_dataset)
    try:
        with dist.scope():
            model.fit(train_dataset, epochs=config.num_intervals, shuffle=False,
                      steps_per_epoch=config.checkpoint_every, initial_epoch=initial_epoch,
                      validation_data=eval_dataset if dist.kind == "none" else None,
                      callbacks=callbacks, verbose=verbose if chief else 0)
    finally:
        if not chief:
            shutil.rmtree(writes, ignore_errors=True)
    if not chief:
        dist.barrier()  # the chief's evaluation: JAX ends a process only with the others
        return {"output_dir": run_dir, "worker": dist.worker_index,
                "distribution": dist.record()}
    model = dist.local_model(model)
    swa.apply_average(model)  # the average of the last `swa_last` checkpoints

    # === Evaluation and outputs ===
    model_path = outputs.save_model(model, os.path.join(run_dir, "model.keras"))
    export_path = None
    if config.export:
        say("Exporting the TF Serving SavedModel")
        export_path = os.path.join(run_dir, "saved_model", "1")
        export_saved_model(model_path, export_path, overwrite=True)
    y_true, swa_scores = outputs.predict(model, eval_dataset, num_eval_clips,
                                         description="Evaluating the SWA model on eval")
    swa_weights = model.get_weights()
    model.set_weights(swa.last_weights)
    _, last_scores = outputs.predict(model, eval_dataset, num_eval_clips,
                                     description=f"Evaluating the last checkpoint (step "
                                                 f"{config.train_steps}) on eval")
    model.set_weights(swa_weights)
    metrics = tagging_metrics(y_true, swa_scores)
    last = tagging_metrics(y_true, last_scores)
    positives = y_true.sum(axis=0)
    chance = float(np.mean((positives / len(y_true))[positives > 0]))
    _write_per_class(os.path.join(run_dir, "per_class_ap.csv"), info.class_names, metrics,
                     positives)
    results = {
        "mAP": metrics["mAP"], "AUC": metrics["AUC"], "d_prime": metrics["d_prime"],
        "last_checkpoint": {"step": config.train_steps, "mAP": last["mAP"],
                            "AUC": last["AUC"], "d_prime": last["d_prime"]},
        "chance_mAP": chance,
        "num_eval_clips": int(len(y_true)),
        "num_classes": num_classes,
        "classes_without_positives": metrics["num_excluded_ap"],
        "swa_steps": list(swa.snapshot_steps),
        "skipped_bad_records": skips.counts(),
        "num_parameters": int(model.count_params()),
        "backend": keras.backend.backend(),
        "distribution": dist.record(),
        "wall_time_seconds_this_process": round(time.monotonic() - start_time, 1),
        "config": {**config.to_dict(), "data_dir": os.path.abspath(config.data_dir),
                   "clip_samples": clip_samples},
        "normalization": trainer.normalization_record(converter),
        "model": model_path,
        "saved_model": export_path,
    }
    write_json(os.path.join(run_dir, "metrics.json"), results)
    # sklearn's AP can exceed 1 by a rounding error.
    plot_per_class_ap(np.clip(metrics["per_class"]["AP"], 0.0, 1.0), info.class_names,
                      os.path.join(run_dir, "per_class_ap.png"),
                      title=f"Per-class AP, {config.pe} (eval)")
    if os.path.exists(log_path):
        plot_learning_curves(outputs.read_training_log(log_path, config.checkpoint_every),
                             os.path.join(run_dir, "learning_curves.png"),
                             title=f"AudioSet training, {config.pe}")
    dist.barrier()
    return {**results, "output_dir": run_dir}


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


def _resume(model, checkpoint_dir, swa, log):
    """Restores the newest intact checkpoint whose needed SWA snapshots are intact too.

    Returns `(step, fell_back)`: the step resumed from (0: from scratch) and whether a
    damaged file was passed over (then a step of 0 needs a freshly built model).
    """
    before, fell_back = None, False
    while True:
        step, damaged = resumption.restore_latest(model, checkpoint_dir, before=before,
                                                  log=log)
        fell_back = fell_back or bool(damaged)
        bad = swa.damaged_snapshots(step)
        if not bad:
            if fell_back and step == 0:
                log("No intact checkpoint to resume from: training starts over from step 0 "
                    "(the run is deterministic: it ends as an uninterrupted run would).")
            return step, fell_back
        for _, error in bad:
            log(f"Warning: {error}. The final average needs it: training goes back to a "
                "checkpoint before it and makes it again.")
        fell_back, before = True, min(snapshot for snapshot, _ in bad)


def _write_per_class(path, class_names, metrics, positives):
    rows = [("index", "class_name", "AP", "AUC", "eval_positives")]
    for index, name in enumerate(class_names):
        ap, auc = metrics["per_class"]["AP"][index], metrics["per_class"]["AUC"][index]
        rows.append((index, name, "" if np.isnan(ap) else f"{ap:.6f}",
                     "" if np.isnan(auc) else f"{auc:.6f}", int(positives[index])))
    outputs.write_csv(path, rows)


def summary(results):
    """The lines the recipe prints at the end of a run."""
    if "worker" in results:
        record = results["distribution"]
        return (f"Worker {results['worker']} of {record['num_workers']} done; worker 0 "
                f"writes the results in {results['output_dir']}.")
    out, last = results["output_dir"], results["last_checkpoint"]
    lines = [
        f"{results['config']['pe']}: eval mAP {results['mAP']:.3f} (chance "
        f"{results['chance_mAP']:.3f}), AUC {results['AUC']:.3f}, d' {results['d_prime']:.3f} "
        f"on {results['num_eval_clips']} clips; SWA of steps {results['swa_steps']}.",
        f"Last checkpoint (step {last['step']}) alone: mAP {last['mAP']:.3f}, AUC "
        f"{last['AUC']:.3f}, d' {last['d_prime']:.3f}.",
    ]
    skipped = {k: v for k, v in results["skipped_bad_records"].items() if v}
    if skipped:
        lines.append("Skipped bad records: " + ", ".join(
            f"{count} in {purpose}" for purpose, count in skipped.items()))
    lines += [
        f"Model: {os.path.join(out, 'model.keras')}"
        + (f"; TF Serving export: {results['saved_model']}" if results["saved_model"] else ""),
        f"Metrics: {os.path.join(out, 'metrics.json')}, per-class AP: "
        f"{os.path.join(out, 'per_class_ap.csv')}",
        f"Plots: {os.path.join(out, 'learning_curves.png')}, "
        f"{os.path.join(out, 'per_class_ap.png')}",
        f"TensorBoard: tensorboard --logdir={os.path.join(out, 'tensorboard')}",
    ]
    return "\n".join(lines)
