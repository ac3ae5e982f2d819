"""tf.data input pipeline: valid records (`shards.read_records`) -> `(features, targets)`
batches, with the training augmentations.

Per clip: read, parse and validate (each record is parsed once, see `shards`), (balanced
resampling), shuffle, crop or pad, then the model's audio converter (e.g. STFT,
SpecAugment, log-mel, scaling) in one parallel map, on the int16 samples. The front end
runs per clip rather than on whole batches: the STFT intermediates of one clip stay in
cache, which is faster on CPU than the same math on a whole batch (`bench/bench_pipeline.py`).
The SpecAugment masks are the exception: they are drawn for blocks of 64 clips and zipped
to the clips, as small per-clip ops cost more than the masking itself. tf.data's autotuning
model is off: AUTOTUNE stages then run on min(16, cores) threads, which is what the one
heavy stage, the per-clip front end, needs, and no stage times its every element.
"""

import random

import tensorflow as tf

from keras_astpe.data import schema
from keras_astpe.data.shards import BadRecordReport, keep_folds, read_records, resolve_files
from keras_astpe.spec_augment import SpecAugmentConfig, spec_augment_masks

AUTOTUNE = tf.data.AUTOTUNE
_DRAW_BLOCK = 64  # clips whose SpecAugment masks are drawn together
# The paper's settings (a frozen dataclass, so sharing one instance is safe).
DEFAULT_SPEC_AUGMENT = SpecAugmentConfig()


def _multi_hot(labels, num_classes):
    return tf.minimum(tf.reduce_sum(tf.one_hot(labels, num_classes), axis=0), 1.0)


def _class_counts(records, num_classes):
    """(clips per class, number of clips) in one pass; a clip counts once per label."""
    hot = records.map(lambda element: _multi_hot(element["labels"], num_classes),
                      num_parallel_calls=AUTOTUNE)
    counts, clips = (hot.batch(1024)
                     .map(lambda batch: (tf.reduce_sum(batch, axis=0), tf.shape(batch)[0]))
                     .reduce((tf.zeros([num_classes]), 0),
                             lambda total, new: (total[0] + new[0], total[1] + new[1])))
    return counts.numpy(), int(clips)


def _balanced(records, class_counts, num_clips, num_classes, seed):
    """Weighted sampling with replacement, streamed, as the balanced sampler of AST/PSLA.

    A clip's weight is the sum over its labels of 1 / (clips of that class). Each epoch a clip
    is emitted k ~ Poisson(N * weight / total weight) times, N the number of clips: these
    independent counts are the Poisson form of drawing N clips with replacement
    (`WeightedRandomSampler`), so each clip keeps its sampling frequency while the shards
    are still read sequentially. The copies of a clip leave together; the shuffle buffer
    downstream spreads them.
    """
    inverse = tf.constant([1.0 / count if count > 0 else 0.0 for count in class_counts],
                          tf.float32)
    total_weight = float((class_counts > 0).sum())  # sum over clips of the clip weights

    def copies(element, root):
        weight = tf.reduce_sum(_multi_hot(element["labels"], num_classes) * inverse)
        rate = num_clips * weight / total_weight
        count = tf.random.stateless_poisson([], tf.stack([root, 0]), rate, dtype=tf.int64)
        return tf.data.Dataset.from_tensors(element).repeat(count)

    # One random int64 per clip and epoch seeds its count.
    roots = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(records, roots).flat_map(copies)


def _augmentation_draws(seed, num_frames, num_bins, spec_augment):
    """Per-clip random draws for training, in processing order: dicts of `root`, an int64
    that seeds the clip's random crop, and with `spec_augment` the clip's SpecAugment
    keep-masks `keep_time` [frames] and `keep_freq` [bins].

    The masks are drawn for a block of clips at once, from the block's first root: one clip
    at a time, their ~25 small ops cost ~35 us of CPU per clip, in blocks ~10
    (`bench/bench_pipeline.py --breakdown`).
    """
    def draw(roots):
        draws = {"root": roots}
        if spec_augment is not None:
            draws["keep_time"], draws["keep_freq"] = spec_augment_masks(
                tf.stack([roots[0], 2]), num_frames, num_bins, spec_augment,
                batch_shape=[_DRAW_BLOCK])
        return draws

    return (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            .batch(_DRAW_BLOCK).map(draw).unbatch())


def _crop_or_pad(waveform, clip_samples, seed):
    """Random crop (seed given) or the start (seed None), zero-padded at the end.

    One copy of the samples: the crop; a clip long enough is not passed through a pad.
    """
    length = tf.shape(waveform)[0]
    start = 0 if seed is None else tf.random.stateless_uniform(
        [], seed, minval=0, maxval=tf.maximum(length - clip_samples, 0) + 1, dtype=tf.int32)
    waveform = tf.slice(waveform, [start], [tf.minimum(length - start, clip_samples)])
    waveform = tf.cond(length - start < clip_samples,
                       lambda: tf.pad(waveform, [[0, clip_samples - tf.shape(waveform)[0]]]),
                       lambda: waveform)
    return tf.ensure_shape(waveform, [clip_samples])


def _clip_features(pcm16, draws, *, clip_samples, converter):
    """One clip's int16 samples -> `[frames, mel_bins]` features.

    Crops the int16 samples first (only the kept ones are converted to float): at random
    with `draws` (from `_augmentation_draws`), which also bring the SpecAugment masks if
    any, at the start without. Then runs the front end (`converter.features`).
    """
    seed = None if draws is None else tf.stack([draws["root"], 1])
    masks = None if draws is None or "keep_time" not in draws else (
        draws["keep_time"], draws["keep_freq"])
    features = converter.features(_crop_or_pad(pcm16, clip_samples, seed), masks=masks)
    return tf.ensure_shape(features, [converter.num_frames(clip_samples),
                                      converter.num_mel_bins])


def _mixup(batch_seed, alpha, features, targets):
    """Mixes each example with a random partner of the batch, lambda ~ Beta(alpha, alpha)."""
    seeds = tf.random.experimental.stateless_split(batch_seed, 3)
    size = tf.shape(features)[0]
    gamma_a = tf.random.stateless_gamma([size], seeds[0], alpha)
    gamma_b = tf.random.stateless_gamma([size], seeds[1], alpha)
    total = gamma_a + gamma_b
    lam = tf.where(total > 0, gamma_a / tf.where(total > 0, total, 1.0), 0.5)
    partner = tf.argsort(tf.random.stateless_uniform([size], seeds[2]))
    mixed_features = (lam[:, None, None] * features
                      + (1.0 - lam[:, None, None]) * tf.gather(features, partner))
    mixed_targets = lam[:, None] * targets + (1.0 - lam[:, None]) * tf.gather(targets, partner)
    return mixed_features, mixed_targets


def _dataset_options(deterministic):
    """The pipeline's tf.data options: autotuning's model off (see the module docstring; ~2%
    of the CPU per clip)."""
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    return options


def make_dataset(file_pattern, *, converter, num_classes, batch_size, training,
                 clip_samples=158960, spec_augment=DEFAULT_SPEC_AUGMENT, multi_label=True,
                 folds=None, mixup_alpha=0.0, balanced_sampling=False, seed=None,
                 deterministic=False, skip_bad_records=False, repeat=None,
                 shuffle_buffer=1000, drop_remainder=None, return_clip_ids=False,
                 shard_count=1, shard_index=0):
    """Batches `(features [B, frames, mel_bins] float32, targets [B, num_classes] float32)`.

    `converter`: the model's audio converter (`LogMelAudioConverter`, the paper's, or AST's
    `KaldiFbankAudioConverter`): the pipeline runs its `features(waveform, masks)`.
    `training=True` shuffles shards and records, crops clips at random, and applies
    `spec_augment` (None disables), `mixup_alpha` > 0 (Beta(alpha, alpha) mixing of features
    and targets within a batch) and `balanced_sampling`; evaluation reads in order, takes
    the start of each clip and zero-pads short ones at the end. `multi_label`: multi-hot
    targets (sigmoid/BCE), else one-hot (softmax; each clip must have exactly one label).
    `folds`: keep only these folds (e.g. ESC-50's). `repeat` defaults to `training`,
    `drop_remainder` to `training`. With `seed` and `deterministic=True` the batches are the
    same on every run (evaluation order is always deterministic). `return_clip_ids` adds a
    third element, the clip ids.

    `shard_count` > 1 makes the dataset of one worker of a data-parallel run,
    `shard_index`: the stream of clips (shuffled, with their random crops and SpecAugment
    masks drawn) is cut into blocks of `batch_size` (the worker's share of the global
    batch), and the worker keeps every `shard_count`-th block from the `shard_index`-th,
    before the front end runs. With the same `seed`, batch `s` of the workers, in worker
    order, is batch `s` of the unsharded dataset batched by `shard_count * batch_size`: the
    same clips in the same order, processed alike, each clip once (mixup pairs clips of a
    worker's batch). Every worker reads and parses every record.

    The dataset's `bad_records` attribute is the `BadRecordReport` of
    `skip_bad_records=True` (None otherwise); without it, a shard that is missing or not of
    the size its converter recorded raises `DamagedShardError` here, other bad data a
    `tf.errors.InvalidArgumentError` naming the file when read.
    """
    _check_arguments(converter, num_classes, batch_size, training, clip_samples, folds,
                     mixup_alpha, balanced_sampling, shuffle_buffer, shard_count, shard_index)
    files = resolve_files(file_pattern)
    seed = random.randrange(2**31) if seed is None else int(seed)
    report = BadRecordReport() if skip_bad_records else None

    def records(shuffle_seed, report):
        stream = read_records(files, sample_rate=converter.sample_rate,
                              num_classes=num_classes, single_label=not multi_label,
                              report=report, shuffle_seed=shuffle_seed)
        return stream if folds is None else keep_folds(stream, folds)

    dataset = _clip_stream(records, converter, training=training, seed=seed,
                           clip_samples=clip_samples, num_classes=num_classes,
                           spec_augment=spec_augment if training else None,
                           balanced_sampling=balanced_sampling, report=report,
                           repeat=training if repeat is None else repeat,
                           shuffle_buffer=shuffle_buffer)
    if shard_count > 1:  # a worker's blocks of clips, drawn as in the whole stream
        dataset = (dataset.enumerate()
                   .filter(lambda index, _: index // batch_size % shard_count == shard_index)
                   .map(lambda _, element: element))

    def process(element, draws=None):
        features = _clip_features(element["pcm16"], draws, clip_samples=clip_samples,
                                  converter=converter)
        if multi_label:
            targets = _multi_hot(element["labels"], num_classes)
        else:  # the reader checked that there is exactly one label
            targets = tf.one_hot(element["labels"][0], num_classes)
        return features, targets, element["clip_id"]

    dataset = dataset.map(process, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size,
                            drop_remainder=training if drop_remainder is None else drop_remainder)
    if mixup_alpha > 0:
        mixup_seed = tf.constant([seed, 3], tf.int64)
        dataset = dataset.enumerate().map(
            lambda index, batch: (*_mixup(
                tf.random.experimental.stateless_fold_in(mixup_seed, index), mixup_alpha,
                batch[0], batch[1]), batch[2]),
            num_parallel_calls=AUTOTUNE)
    if not return_clip_ids:
        dataset = dataset.map(lambda features, targets, clip_ids: (features, targets))
    dataset = dataset.prefetch(AUTOTUNE).with_options(
        _dataset_options(deterministic=deterministic or not training))
    dataset.bad_records = report
    return dataset


def _check_arguments(converter, num_classes, batch_size, training, clip_samples, folds,
                     mixup_alpha, balanced_sampling, shuffle_buffer, shard_count, shard_index):
    if num_classes < 1 or batch_size < 1:
        raise ValueError(f"num_classes and batch_size must be >= 1, got {num_classes}, "
                         f"{batch_size}")
    if clip_samples < converter.num_samples(1):
        raise ValueError(f"clip_samples ({clip_samples}) is shorter than one frame "
                         f"({converter.num_samples(1)} samples)")
    if converter.sample_rate != schema.SAMPLE_RATE:
        raise ValueError(f"the TFRecords hold {schema.SAMPLE_RATE} Hz audio, but the front "
                         f"end's sample rate is {converter.sample_rate}")
    if mixup_alpha < 0:
        raise ValueError(f"mixup_alpha must be >= 0, got {mixup_alpha}")
    if not training and (mixup_alpha > 0 or balanced_sampling):
        raise ValueError("mixup_alpha and balanced_sampling apply to training only")
    if training and shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    if folds is not None and not folds:
        raise ValueError("folds is empty: pass None to keep every fold")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
                         f"shard_count={shard_count}")


def _clip_stream(records, converter, *, training, seed, clip_samples, num_classes,
                 spec_augment, balanced_sampling, report, repeat, shuffle_buffer):
    """The records in the order they are processed: resampled, shuffled and repeated as
    asked, and for training zipped with their augmentation draws."""
    dataset = records(seed if training else None, report)
    if balanced_sampling:
        # A pass over the data first; bad data it skips are counted when training reads them.
        class_counts, num_clips = _class_counts(
            records(None, None if report is None else BadRecordReport()), num_classes)
        dataset = _balanced(dataset, class_counts, num_clips, num_classes, seed)
    if training:  # before repeat: every clip once per epoch (a new order each epoch)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    if repeat:
        dataset = dataset.repeat()
    if training:  # draws for the clips in the order they are processed
        dataset = tf.data.Dataset.zip(dataset, _augmentation_draws(
            seed, converter.num_frames(clip_samples), converter.spec_augment_bins,
            spec_augment))
    return dataset
