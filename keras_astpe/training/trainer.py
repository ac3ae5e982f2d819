"""The opening and closing every training recipe shares, with the paper's defaults.

A recipe (`engine.py` and its configurations, `esc50.py`, `tuning.py`) has the settings of
`RecipeConfig` and is: an output folder (`prepare_output_dir`), a dataset that describes
itself (`DatasetInfo`), the preset's front end with the run's normalization statistics
(`preset_converter`, `resolve_stats`), a classifier compiled with its task's defaults
(`compile_classifier`), `make_dataset` with the recipe's data options (`DataOptions`),
`fit`, and the scores of the trained model (`outputs.predict`). What differs between
recipes is the schedule of `fit` calls.
"""

import dataclasses
import os
import tempfile

import keras
import tensorflow as tf

from keras_astpe.cli import setting
from keras_astpe.data import pipeline, shards
from keras_astpe.models.classifier import CLIP_VALUE
from keras_astpe.models.presets import get_preset_entry, preset_audio_converter
from keras_astpe.normalization import STATS_FILENAME, NormalizationStats
from keras_astpe.training import keras_internals


def prepare_output_dir(path, flag="--output_dir"):
    """Creates the run folder; a clear error if it is a file or cannot be written."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{flag}={path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise PermissionError(f"{flag}={path} cannot be written: "
                              f"{error.strerror or error}") from None
    return path


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The input-pipeline options every training recipe exposes (see `make_dataset`)."""

    skip_bad_records: bool = setting(
        False, help="Skip (and count) unreadable records, damaged or short shards instead of "
        "stopping with an error naming them. The number skipped is printed at the end and "
        "stored in the results.")
    mixup: float = setting(
        0.0, help="Mixup alpha: each training clip is mixed with another of its batch with a "
        "Beta(alpha, alpha) weight, features and targets alike (0: off).")
    balanced_sampling: bool = setting(
        False, help="Draw training clips with probability inversely proportional to the "
        "frequency of their classes (the balanced sampler of AST/PSLA).")

    def __post_init__(self):
        if self.mixup < 0:
            raise ValueError(f"--mixup must be >= 0, got {self.mixup}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    """What every training recipe has: its data (the demo's without `data_dir`), its output
    folder, a seed and the input-pipeline options. Recipes refine the help of a field by
    declaring it again."""

    data_dir: str | None = setting(
        None, help="Converted dataset (TFRecords and dataset.json of tfrecords_tools). "
        "Without it, the recipe's demo data are generated under demo_data/ on first use.")
    output_dir: str | None = setting(None, help="Output folder.")
    seed: int = setting(0, help="Seed of initialisation, data order, augmentation, dropout.")
    demo_size: str = setting("small", choices=("small", "tiny"),
                             help="Size of the generated demo data (tiny: a few clips, for "
                             "smoke tests).")
    data: DataOptions = dataclasses.field(default_factory=DataOptions)

    def to_dict(self):
        return dataclasses.asdict(self)


class SkipCounter:
    """Adds up what the datasets (and the statistics pass) of a run skipped, per purpose."""

    def __init__(self):
        self._reports = {}
        self._fixed = {}

    def track(self, purpose, dataset):
        """Counts the `BadRecordReport` of `dataset` (if it skips) under `purpose`."""
        if dataset.bad_records is not None:
            self._reports.setdefault(purpose, []).append(dataset.bad_records)
        return dataset

    def add(self, purpose, records):
        self._fixed[purpose] = self._fixed.get(purpose, 0) + int(records)

    def counts(self):
        """`{purpose: records skipped or lost}`, summed over the datasets of each purpose
        (each dataset counts a damage once, however often it reads it)."""
        counts = dict(self._fixed)
        for purpose, reports in self._reports.items():
            counts[purpose] = counts.get(purpose, 0) + sum(r.records for r in reports)
        return counts

    def summary(self):
        """One line of what was skipped, or None when nothing was."""
        counts = {purpose: count for purpose, count in self.counts().items() if count}
        if not counts:
            return None
        return ", ".join(f"{count} bad record(s) skipped in {purpose}"
                         for purpose, count in counts.items())


def _clips_used(files, max_clips):
    known = shards.recorded_num_records(files)
    if known is not None and (max_clips is None or max_clips >= known):
        return f"{known:,} clips"
    if max_clips is None:
        return "all clips"
    if known is None:
        return f"at most {max_clips:,} clips"
    return f"the first {max_clips:,} of {known:,} clips"


def resolve_stats(run_dir, train_files, frontend, *, source=None, max_clips=None,
                  skip_bad_records=False, progress=True, log=print):
    """Normalization statistics of a run, stored as `<run_dir>/normalization_stats.json`.

    A run keeps the statistics it started with (a resumed run must scale its inputs as
    before). A new run takes `source` when given: `NormalizationStats` (those a pretrained
    model carries) or a folder holding `normalization_stats.json` (computed once for a
    dataset) if it has one; otherwise it computes them from `train_files` (at most
    `max_clips` clips; None uses all). Returns `(stats, bad records skipped)`.
    """
    from keras_astpe.data.statistics import compute_stats

    own = os.path.join(run_dir, STATS_FILENAME)
    skipped = 0
    if os.path.exists(own):
        stats = NormalizationStats.load(own)
    elif isinstance(source, NormalizationStats):
        stats = source
    elif source is not None and os.path.exists(os.path.join(source, STATS_FILENAME)):
        stats = NormalizationStats.load(source)
        log(f"Normalization statistics from {os.path.join(source, STATS_FILENAME)}")
    else:
        log(f"Computing normalization statistics from {_clips_used(train_files, max_clips)} "
            f"of {len(train_files)} training shard(s)")
        stats = compute_stats(train_files, frontend, max_clips=max_clips, progress=progress,
                              skip_bad_records=skip_bad_records)
        skipped = stats.skipped_records
    if stats.frontend is not None and stats.frontend != frontend:
        raise ValueError(
            f"The normalization statistics were computed for the front end {stats.frontend}, "
            f"but the model needs {frontend}.")
    if not os.path.exists(own):
        stats.save(own)
    return stats, skipped


def preset_converter(preset, run_dir, train_files, skips, *, stats_source=None,
                     stats_max_clips=None, skip_bad_records=False, fixed_frames=True,
                     progress=True, log=print):
    """The audio converter preset `preset` trains with in the run of `run_dir`: with the
    run's statistics (`resolve_stats`; bad records skipped there are counted in `skips`)
    when its front end needs them, with its fixed ones otherwise."""
    entry = get_preset_entry(preset)
    stats = None
    if entry.needs_statistics:
        stats, skipped = resolve_stats(run_dir, train_files, entry.log_mel_config,
                                       source=stats_source, max_clips=stats_max_clips,
                                       skip_bad_records=skip_bad_records, progress=progress,
                                       log=log)
        skips.add("the statistics pass", skipped)
    return preset_audio_converter(preset, stats, fixed_frames=fixed_frames)


def with_own_frames(converter):
    """A copy of `converter` that keeps each clip's frames: AST's without its padding or
    cutting to the frames of pretraining; any other as it is."""
    config = converter.get_config()
    if isinstance(config.get("config"), dict) and "target_frames" in config["config"]:
        config = {**config, "config": {**config["config"], "target_frames": None}}
    return type(converter).from_config(config)


def clip_samples(converter, num_frames, clip_seconds):
    """Samples of each training clip: those of `num_frames` frames, or the dataset's whole
    clips (`clip_seconds`) for a converter that pads or cuts its features to fixed frames
    itself (AST's, which computes the fbank of the whole clip first)."""
    if getattr(getattr(converter, "config", None), "target_frames", None) is not None:
        return int(round(clip_seconds * converter.sample_rate))
    return converter.num_samples(num_frames)


def compile_classifier(model, learning_rate, *, metrics="auto", jit_compile="auto",
                       distribution=None):
    """Compiles an `ASTClassifier` with its task's defaults (`ASTClassifier.compile`: the
    paper's Adam with gradient clipping, the loss and metrics of its labels), the Adam update
    fused into one kernel on PyTorch (`keras_internals.fused_adam_on_torch`).

    `jit_compile`: Keras' `compile` argument ("auto": XLA where Keras finds it works and
    helps, i.e. TensorFlow on a GPU and JAX always; True; False). `distribution`: the run's
    `keras_astpe.training.distribution.Distribution`, whose optimizer class is used (under
    tf.distribute it clips the gradient summed over the replicas, as on one device).
    """
    optimizer_cls = keras_internals.fused_adam_on_torch(keras.optimizers.Adam)
    if distribution is not None:
        optimizer_cls = distribution.optimizer_class(optimizer_cls)
    model.compile(optimizer=optimizer_cls(learning_rate, clipvalue=CLIP_VALUE),
                  metrics=metrics, jit_compile=jit_compile)
    return model


def normalization_record(converter):
    """How a front end scales its features, for the results files: the statistics of the
    paper's front end, or the mean and standard deviation of AST's."""
    stats = getattr(converter, "stats", None)
    if stats is not None:
        return {"low": stats.low, "high": stats.high, "num_clips": stats.num_clips}
    return {"mean": converter.config.mean, "std": converter.config.std}


def dataset_maker(*, num_classes, multi_label, batch_size, clip_samples, converter,
                  options, skips):
    """`make(files, training, num_clips=None, batch_size=None, count_skips=True, **kwargs)`:
    `make_dataset` with the run's settings (`batch_size` overrides the run's), counting what
    it skips in `skips` under `"training"` or `"evaluation"` unless `count_skips` is False.

    `num_clips` (evaluation) is the number of clips the data hold: the dataset then has
    that many batches as its cardinality (progress bars, no "ran out of data" warning), and
    tf.data raises if the data hold another number, unless bad records may be skipped.
    """
    default_batch_size = batch_size

    def make(files, training, num_clips=None, batch_size=None, count_skips=True, **kwargs):
        batch_size = batch_size or default_batch_size
        extra = {"mixup_alpha": options.mixup,
                 "balanced_sampling": options.balanced_sampling} if training else {}
        dataset = pipeline.make_dataset(
            files, num_classes=num_classes, batch_size=batch_size, training=training,
            clip_samples=clip_samples, converter=converter,
            multi_label=multi_label, skip_bad_records=options.skip_bad_records,
            **extra, **kwargs)
        if count_skips:
            skips.track("training" if training else "evaluation", dataset)
        if num_clips is not None and not options.skip_bad_records:
            report = dataset.bad_records
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(
                -(-num_clips // batch_size)))
            dataset.bad_records = report
        return dataset

    return make
