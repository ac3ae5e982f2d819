"""tf.data pipeline: shapes, targets, folds, determinism, mixup, balanced sampling, bad data."""

import logging
import zlib

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe import frontend
from keras_astpe.data import pipeline, schema
from keras_astpe.data import shards as shard_reader
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models import LogMelAudioConverter
from keras_astpe.normalization import NormalizationStats
from keras_astpe.spec_augment import SpecAugmentConfig

pytestmark = pytest.mark.backend_agnostic

RATE = schema.SAMPLE_RATE
CLIP = 1600  # 100 ms -> 8 frames: keeps the tests fast
FRAMES = FrontEndConfig().num_frames(CLIP)
CONVERTER = LogMelAudioConverter()  # the paper's front end, AudioSet statistics


def _example(clip_id, labels, *, samples=CLIP, fold=schema.NO_FOLD, seed=None,
             sample_rate=None):
    rng = np.random.default_rng(zlib.crc32(clip_id.encode()) if seed is None else seed)
    serialized = schema.encode_example(0.2 * rng.standard_normal(samples), clip_id, labels,
                                       original_sample_rate=44100, duration=samples / RATE,
                                       fold=fold)
    if sample_rate is None:
        return serialized
    example = tf.train.Example.FromString(serialized)
    example.features.feature["audio/sample_rate"].int64_list.value[:] = [sample_rate]
    return example.SerializeToString()


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def _collect(dataset):
    features, targets, ids = zip(*[(f.numpy(), t.numpy(), i.numpy()) for f, t, i in dataset],
                                 strict=True)
    return np.concatenate(features), np.concatenate(targets), [i.decode() for i in
                                                               np.concatenate(ids)]


@pytest.fixture
def shards(tmp_path):
    """Two shards, 8 clips: clip k has labels [k % 4, 4 + k % 2] and ESC-50 fold k % 5 + 1."""
    paths = []
    for shard in range(2):
        records = [_example(f"s{shard}c{i}", [(2 * i + shard) % 4, 4 + shard],
                            fold=(2 * i + shard) % 5 + 1, seed=10 * shard + i)
                   for i in range(4)]
        paths.append(_write(tmp_path / f"train-{shard}.tfrecord", records))
    return str(tmp_path / "train-*.tfrecord")


def test_default_clip_gives_992_frames_and_training_batches(tmp_path):
    path = _write(tmp_path / "ten_seconds.tfrecord",
                  [_example(f"c{i}", [i], samples=10 * RATE) for i in range(3)])
    evaluation = list(pipeline.make_dataset(path, num_classes=3, batch_size=2, training=False,
                                            converter=CONVERTER))
    assert [tuple(f.shape) for f, _ in evaluation] == [(2, 992, 64), (1, 992, 64)]
    assert all(f.dtype == tf.float32 and t.dtype == tf.float32 for f, t in evaluation)
    training = pipeline.make_dataset(path, num_classes=3, batch_size=2, training=True, seed=0,
                                     converter=CONVERTER)
    for features, targets in training.take(4):  # repeats, drops the remainder
        assert features.shape == (2, 992, 64) and targets.shape == (2, 3)
        assert np.isfinite(features.numpy()).all() and (features.numpy() >= 0).all()


def test_multi_hot_and_one_hot_targets(tmp_path, shards):
    dataset = pipeline.make_dataset(shards, num_classes=6, batch_size=3, training=False,
                                    clip_samples=CLIP, return_clip_ids=True, converter=CONVERTER)
    features, targets, ids = _collect(dataset)
    assert features.shape == (8, FRAMES, 64) and sorted(ids) == sorted(
        f"s{s}c{i}" for s in range(2) for i in range(4))
    for target, clip_id in zip(targets, ids, strict=True):
        shard, index = int(clip_id[1]), int(clip_id[3])
        expected = np.zeros(6)
        expected[[(2 * index + shard) % 4, 4 + shard]] = 1.0
        np.testing.assert_array_equal(target, expected)

    path = _write(tmp_path / "single.tfrecord", [_example(f"c{i}", [i]) for i in range(3)])
    _, targets, ids = _collect(pipeline.make_dataset(
        path, num_classes=3, batch_size=2, training=False, clip_samples=CLIP,
        multi_label=False, return_clip_ids=True, converter=CONVERTER))
    assert ids == ["c0", "c1", "c2"]  # evaluation keeps the file order
    np.testing.assert_array_equal(targets, np.eye(3))


def test_one_hot_targets_need_exactly_one_label(shards):
    dataset = pipeline.make_dataset(shards, num_classes=6, batch_size=2, training=False,
                                    clip_samples=CLIP, multi_label=False, converter=CONVERTER)
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly one label"):
        list(dataset)


def test_fold_filtering(shards):
    for folds in ([1], [2, 4]):
        _, _, ids = _collect(pipeline.make_dataset(
            shards, num_classes=6, batch_size=4, training=False, clip_samples=CLIP,
            folds=folds, return_clip_ids=True, converter=CONVERTER))
        expected = [f"s{s}c{i}" for s in range(2) for i in range(4)
                    if (2 * i + s) % 5 + 1 in folds]
        assert sorted(ids) == sorted(expected) and expected


def test_evaluation_crops_the_start_and_pads_the_end(tmp_path):
    stats = NormalizationStats()
    config = FrontEndConfig()
    long_record = _example("long", [0], samples=2 * CLIP, seed=1)
    short_record = _example("short", [0], samples=CLIP // 2, seed=2)
    path = _write(tmp_path / "eval.tfrecord", [long_record, short_record])
    features, _ = next(iter(pipeline.make_dataset(path, num_classes=1, batch_size=2,
                                                  training=False, clip_samples=CLIP,
                                                  converter=CONVERTER)))
    waveforms = [schema.decode_example(r)["waveform"].numpy()
                 for r in (long_record, short_record)]
    expected_long = frontend.waveform_to_features(waveforms[0][:CLIP], config, stats)
    expected_short = frontend.waveform_to_features(
        np.pad(waveforms[1], (0, CLIP - CLIP // 2)), config, stats)
    np.testing.assert_allclose(features[0], expected_long, atol=1e-5)
    np.testing.assert_allclose(features[1], expected_short, atol=1e-5)


def test_training_takes_random_crops(tmp_path):
    record = _example("long", [0], samples=CLIP + 200, seed=4)
    path = _write(tmp_path / "one.tfrecord", [record])
    waveform = schema.decode_example(record)["waveform"].numpy()
    windows = np.stack([waveform[start:start + CLIP] for start in range(201)])
    candidates = frontend.waveform_to_features(windows, FrontEndConfig(),
                                               NormalizationStats()).numpy()
    dataset = pipeline.make_dataset(path, num_classes=1, batch_size=1, training=True,
                                    clip_samples=CLIP, spec_augment=None, seed=5,
                                    converter=CONVERTER)
    starts = set()
    for features, _ in dataset.take(12):  # one clip per epoch, a new crop each time
        errors = np.abs(candidates - features.numpy()[0]).max(axis=(1, 2))
        assert errors.min() == 0.0  # exactly the features of one crop
        starts.add(int(errors.argmin()))
    assert len(starts) >= 6


def test_training_applies_new_spec_augment_masks_to_every_clip(tmp_path):
    """Time masks zero whole frames; frequency masks lower the mel energy of the others."""
    clip_samples = 16000  # 98 frames, room for masks of up to 100 frames
    record = _example("one", [0], samples=clip_samples, seed=6)
    path = _write(tmp_path / "one.tfrecord", [record])
    waveform = schema.decode_example(record)["waveform"].numpy()
    clean = frontend.waveform_to_features(waveform, FrontEndConfig(), NormalizationStats())
    clean = clean.numpy()
    dataset = pipeline.make_dataset(
        path, num_classes=1, batch_size=1, training=True, clip_samples=clip_samples,
        spec_augment=SpecAugmentConfig(probability=1.0, max_time_width=20), seed=7,
        converter=CONVERTER)
    masked_frames = set()
    for features, _ in dataset.take(8):  # the one clip, 8 epochs
        features = features.numpy()[0]
        zero = (features == 0).all(axis=-1)
        assert zero.any() and not zero.all() and (clean[zero] > 0).any()
        kept = features[~zero]
        assert (kept <= clean[~zero] + 1e-6).all()
        assert (kept < clean[~zero] - 1e-3).any()  # energy removed by a frequency mask
        masked_frames.add(zero.tobytes())
    assert len(masked_frames) == 8


def _training(shards, **kwargs):
    return pipeline.make_dataset(shards, num_classes=6, batch_size=4, training=True,
                                 clip_samples=CLIP, return_clip_ids=True, **kwargs,
                                 converter=CONVERTER)


def test_deterministic_mode_is_reproducible(shards):
    def batches(seed):
        dataset = _training(shards, seed=seed, deterministic=True, mixup_alpha=0.4)
        return [tuple(x.numpy() for x in batch) for batch in dataset.take(6)]

    first, second, other = batches(3), batches(3), batches(4)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # SpecAugment (probability 0.5) zeroes whole frames in some of the 24 training examples.
    zero_frames = np.concatenate([(f == 0).all(axis=-1).any(axis=-1) for f, _, _ in first])
    assert zero_frames.any() and not zero_frames.all()


def test_every_clip_once_per_epoch_in_a_new_order(shards):
    ids = [i.decode() for _, _, batch in _training(shards, seed=1, deterministic=True,
                                                   spec_augment=None).take(6)
           for i in batch.numpy()]
    epochs = [ids[:8], ids[8:16], ids[16:24]]
    assert all(sorted(epoch) == sorted(epochs[0]) and len(set(epoch)) == 8 for epoch in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


def test_mixup_mixes_features_and_targets_consistently(tmp_path):
    path = _write(tmp_path / "classes.tfrecord", [_example(f"c{i}", [i]) for i in range(8)])

    def first_batches(alpha):
        dataset = pipeline.make_dataset(
            path, num_classes=8, batch_size=8, training=True, clip_samples=CLIP,
            multi_label=False, spec_augment=None, mixup_alpha=alpha, seed=2,
            deterministic=True, converter=CONVERTER)
        return [(f.numpy(), t.numpy()) for f, t in dataset.take(3)]

    lambdas = []
    for (plain_x, plain_y), (mixed_x, mixed_y) in zip(first_batches(0.0), first_batches(0.5),
                                                       strict=True):
        np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, rtol=1e-6)
        own = plain_y.argmax(axis=1)  # one class per clip: targets reveal the partner
        for i in range(8):
            lam = mixed_y[i, own[i]]
            other = [c for c in np.flatnonzero(mixed_y[i]) if c != own[i]]
            partner = int(np.flatnonzero(own == other[0])[0]) if other else i
            expected = lam * plain_x[i] + (1.0 - lam) * plain_x[partner]
            np.testing.assert_allclose(mixed_x[i], expected, rtol=1e-5, atol=1e-5)
            lambdas.append(lam)
    assert np.std(lambdas) > 0.1 and min(lambdas) < 0.9  # Beta(0.5, 0.5) draws, not a constant


def test_balanced_sampling_oversamples_a_rare_class(tmp_path):
    records = [_example(f"common{i}", [0]) for i in range(18)]
    records += [_example(f"rare{i}", [1]) for i in range(2)]
    path = _write(tmp_path / "imbalanced.tfrecord", records)

    def rare_fraction(balanced):
        dataset = pipeline.make_dataset(
            path, num_classes=2, batch_size=50, training=True, clip_samples=400,
            spec_augment=None, balanced_sampling=balanced, seed=0, deterministic=True,
            converter=CONVERTER)
        targets = np.concatenate([t.numpy() for _, t in dataset.take(10)])
        return targets[:, 1].mean()

    # Weights 1/18 per common clip and 1/2 per rare clip: the 2 rare clips hold half of it.
    assert 0.4 < rare_fraction(True) < 0.6
    assert rare_fraction(False) == pytest.approx(0.1, abs=0.02)


@pytest.fixture
def bad_shards(tmp_path):
    """A good shard; one cut inside its last record; one with a bit flipped inside a record
    (its CRC fails); one holding a record that is not an Example, between two good ones."""
    good = _write(tmp_path / "good.tfrecord", [_example(f"g{i}", [0]) for i in range(4)])
    content = open(good, "rb").read()
    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(content[:-100])
    flipped = bytearray(content)
    flipped[len(content) // 2] ^= 1  # in the samples of record 2 of 4
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(bytes(flipped))
    garbage = _write(tmp_path / "garbage.tfrecord",
                     [_example("x0", [0]), b"\x08\x96 not an example", _example("x2", [0])])
    return good, str(truncated), str(corrupt), garbage


def _evaluate(paths, num_classes=2, **kwargs):
    return pipeline.make_dataset(paths, num_classes=num_classes, batch_size=2, training=False,
                                 clip_samples=CLIP, **kwargs, converter=CONVERTER)


def test_damaged_shard_error_names_the_file_and_the_damage(bad_shards):
    good, truncated, corrupt, garbage = bad_shards
    expected = {
        truncated: r"truncated\.tfrecord:\] \[corrupt or truncated, reading stops at "
                   r"record 3: truncated record",
        corrupt: r"corrupt\.tfrecord:\] \[corrupt or truncated, reading stops at "
                 r"record 2: corrupted record at \d+",
        garbage: r"garbage\.tfrecord:\] \[1 record\(s\) are not keras_astpe examples "
                 r".*record 1: ",
    }
    # A cut record header (< 12 bytes) is taken by TensorFlow's reader for the end of file.
    cut_header = good.replace("good", "cut_header")
    content = open(good, "rb").read()
    open(cut_header, "wb").write(content + content[:5])
    expected[cut_header] = (rf"cut_header\.tfrecord:\] \[corrupt or truncated, the 5 bytes "
                            rf"after the last record \(at byte {len(content)}\) are a cut header")
    for path, message in expected.items():
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"damaged TFRecord file\] \[.*" + message):
            list(_evaluate([good, path]))


def test_skip_bad_records_counts_and_reports(bad_shards, caplog):
    good, truncated, corrupt, garbage = bad_shards
    dataset = _evaluate([good, truncated, corrupt, garbage], skip_bad_records=True,
                        return_clip_ids=True)
    with caplog.at_level(logging.WARNING, logger="keras_astpe.data.pipeline"):
        _, _, ids = _collect(dataset)
    assert sorted(ids) == ["g0", "g0", "g0", "g1", "g1", "g1", "g2", "g2", "g3", "x0", "x2"]
    report = dataset.bad_records
    # Without a converter's record, the records after a cut cannot be counted.
    assert (report.records, report.shards, report.uncounted_shards) == (1, 2, 2)
    assert sorted(path.rsplit("/", 1)[-1] for path, _ in report.events) == [
        "corrupt.tfrecord", "garbage.tfrecord", "truncated.tfrecord"]
    assert str(report).startswith("1 bad or lost records skipped, 2 damaged shards, 2 of "
                                  "them without a converter's record")
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert all(name in logged for name in ("garbage.tfrecord", "truncated.tfrecord",
                                           "corrupt.tfrecord", "corrupted record at"))
    assert pipeline.make_dataset(good, num_classes=2, batch_size=2,
                                 training=False, converter=CONVERTER).bad_records is None


def test_records_after_a_bad_one_are_read_and_the_damage_counted_once(tmp_path):
    """Bad records anywhere in a shard, and a cut at its end: every good record is kept."""
    records = [_example("a0", [0]), b"junk", _example("a2", [1]), b"more junk",
               _example("a4", [0])]
    path = _write(tmp_path / "mixed.tfrecord", records)
    content = open(path, "rb").read()
    (tmp_path / "mixed.tfrecord").write_bytes(content[:-3])  # cuts a4
    dataset = _evaluate(path, skip_bad_records=True, return_clip_ids=True)
    assert sorted(_collect(dataset)[2]) == ["a0", "a2"]
    assert (dataset.bad_records.records, dataset.bad_records.shards) == (2, 1)


def test_wrong_sample_rate_raises_even_when_skipping(tmp_path):
    path = _write(tmp_path / "resampled.tfrecord",
                  [_example("ok", [0]), _example("bad_rate", [0], sample_rate=44100)])
    for skip in (False, True):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"sample_rate in\] \[.*resampled\.tfrecord.*bad_rate.*44100"):
            list(_evaluate(path, skip_bad_records=skip))


def test_label_out_of_range_raises(tmp_path):
    path = _write(tmp_path / "labels.tfrecord", [_example("ok", [1]), _example("bad", [2])])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"outside \[0, num_classes\).*labels\.tfrecord.*bad"):
        list(_evaluate(path))


def test_missing_files_and_bad_arguments_raise(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match="no TFRecord file matches"):
        _evaluate(str(tmp_path / "nothing-*.tfrecord"))
    with pytest.raises(FileNotFoundError, match="not found"):
        _evaluate([shards, str(tmp_path / "missing.tfrecord")])
    with pytest.raises(ValueError, match="training only"):
        _evaluate(shards, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="shorter than one frame"):
        pipeline.make_dataset(shards, num_classes=2, batch_size=2, training=False,
                              clip_samples=100, converter=CONVERTER)


def test_shard_deleted_after_building_raises_instead_of_hanging(tmp_path):
    path = _write(tmp_path / "vanishing.tfrecord", [_example("v0", [0])])
    dataset = _evaluate(path)
    (tmp_path / "vanishing.tfrecord").unlink()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not found.*vanishing\.tfrecord"):
        list(dataset)


def test_file_list_of_paths_and_globs(tmp_path, shards):
    extra = _write(tmp_path / "extra.tfrecord", [_example("e0", [0])])
    _, _, ids = _collect(_evaluate([shards, extra], num_classes=6, return_clip_ids=True))
    assert len(ids) == 9 and "e0" in ids


def test_remote_shards_are_read_through_a_buffer_with_the_same_results(tmp_path):
    """`ram://` stands in for a remote file system: buffered reads, the same batches and the
    same damage detection as local (unbuffered) reads."""
    records = [_example(f"r{i}", [i % 2]) for i in range(5)]
    local = _write(tmp_path / "local.tfrecord", records)
    remote = f"ram://{tmp_path.name}/remote.tfrecord"
    tf.io.gfile.makedirs(remote.rsplit("/", 1)[0])
    _write(remote, records)
    for expected, got in zip(_evaluate(local), _evaluate(remote), strict=True):
        np.testing.assert_array_equal(expected[0].numpy(), got[0].numpy())
    with tf.io.gfile.GFile(remote, "wb") as file:
        file.write(open(local, "rb").read()[:-100])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"remote\.tfrecord:\] \[corrupt or truncated"):
        list(_evaluate(remote))


# --- Shards checked against what the converter recorded (tests/data/conftest.py: split
# `train`, 3 shards of 8 clips; split `eval`, 3 shards of 2 clips).

RECORDED = 8  # records per recorded train shard


def _shard(data_dir, index, split="train"):
    return data_dir / f"{split}-{index:05d}-of-00003.tfrecord"


def _record_bytes(path):
    """The byte size of each record of a TFRecord file."""
    return [16 + len(record.numpy()) for record in tf.data.TFRecordDataset(str(path))]


def _damage(data_dir, how):
    """Damages train shard 1 as `how` says; returns the records a reader can still get from
    it (of its 8)."""
    path = _shard(data_dir, 1)
    content = path.read_bytes()
    sizes = _record_bytes(path)
    if how == "empty":
        path.write_bytes(b"")
        return 0
    if how == "cut at a record boundary":
        path.write_bytes(content[:sum(sizes[:3])])
        return 3
    if how == "cut mid-record":
        path.write_bytes(content[:sum(sizes[:5]) + 100])
        return 5
    if how == "appended garbage":
        path.write_bytes(content + b"not a record, appended later")
        return 8
    if how == "corrupt record":  # same size, a flipped bit in record 6: 6, 7 unreadable
        damaged = bytearray(content)
        damaged[sum(sizes[:6]) + 200] ^= 4
        path.write_bytes(bytes(damaged))
        return 6
    if how == "missing":
        path.unlink()
        return 0
    raise ValueError(how)


def _clip_ids(dataset):
    return sorted(i.decode() for _, _, ids in dataset for i in ids.numpy())


def _converted_dataset(data_dir, files=None, **kwargs):
    files = str(data_dir / "train-*.tfrecord") if files is None else files
    return pipeline.make_dataset(files, num_classes=3, batch_size=4, training=False,
                                 clip_samples=CLIP, multi_label=False, return_clip_ids=True,
                                 **kwargs, converter=CONVERTER)


DAMAGE = ("empty", "cut at a record boundary", "cut mid-record", "appended garbage",
          "corrupt record", "missing")


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_recorded_shard_is_an_error_naming_it(converted, how):
    """In raise mode (the default), before any batch when a stat shows it."""
    expected_size = (converted / "dataset.json").read_text().count('"bytes": 27160')
    assert expected_size == 3
    _damage(converted, how)
    name = r"train-00001-of-00003\.tfrecord"
    if how == "corrupt record":  # the same size: found at the end of the shard
        dataset = _converted_dataset(converted)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"damaged TFRecord file\] \[.*{name}:\] \[corrupt or "
                                 rf"truncated, reading stops at record 6: corrupted record.*"
                                 rf"2 of its 8 records lost"):
            list(dataset)
        return
    wrote = r"the converter wrote 27,160 bytes \(8 records\)"
    size = {"empty": "0 bytes", "cut at a record boundary": "10,185 bytes",
            "cut mid-record": "17,075 bytes", "appended garbage": "27,188 bytes",
            "missing": "missing"}[how]
    message = rf"{name}: {size}, {wrote}.*--skip_bad_records"
    with pytest.raises(shard_reader.DamagedShardError, match=message):
        _converted_dataset(converted)
    # The shard list the dataset description gives names it too (a missing shard included).
    files = [str(_shard(converted, index)) for index in range(3)]
    with pytest.raises(shard_reader.DamagedShardError, match=message):
        _converted_dataset(converted, files)


@pytest.mark.parametrize("how", DAMAGE)
def test_skipping_counts_the_records_a_damaged_shard_lost(converted, how):
    readable = _damage(converted, how)
    dataset = _converted_dataset(converted, skip_bad_records=True)
    ids = _clip_ids(dataset)
    assert len(ids) == 16 + readable and len(set(ids)) == len(ids)
    report = dataset.bad_records
    assert (report.records, report.shards, report.uncounted_shards) == (
        RECORDED - readable, 1, 0)
    [(path, description)] = report.events
    assert path.endswith("train-00001-of-00003.tfrecord")
    assert f"{RECORDED - readable} of its 8 records lost" in description
    assert "missing, the converter wrote 27,160 bytes (8 records)" in description or (
        how != "missing")


def test_damage_read_in_every_epoch_is_counted_once(converted):
    _damage(converted, "cut at a record boundary")
    dataset = pipeline.make_dataset(
        str(converted / "train-*.tfrecord"), num_classes=3, batch_size=4, training=True,
        clip_samples=CLIP, multi_label=False, skip_bad_records=True, seed=0, converter=CONVERTER)
    list(dataset.take(15))  # 3 epochs of 19 clips
    assert (dataset.bad_records.records, dataset.bad_records.shards) == (5, 1)


def test_an_empty_eval_shard_is_named(converted):
    _shard(converted, 2, "eval").write_bytes(b"")
    with pytest.raises(shard_reader.DamagedShardError,
                       match=r"eval-00002-of-00003\.tfrecord: 0 bytes, the converter wrote "
                             r"6,788 bytes \(2 records\)"):
        pipeline.make_dataset(str(converted / "eval-*.tfrecord"), num_classes=3,
                              batch_size=2, training=False, clip_samples=CLIP, converter=CONVERTER)


def test_the_per_split_manifest_is_used_without_dataset_json(converted):
    """A conversion made before dataset.json: `<split>-manifest.json` has the record."""
    (converted / "dataset.json").unlink()
    _damage(converted, "cut at a record boundary")
    with pytest.raises(shard_reader.DamagedShardError, match="the converter wrote 27,160 bytes"):
        _converted_dataset(converted)
    dataset = _converted_dataset(converted, skip_bad_records=True)
    assert len(_clip_ids(dataset)) == 19 and dataset.bad_records.records == 5


def test_intact_recorded_shards_read_every_clip(converted):
    ids = _clip_ids(_converted_dataset(converted))
    assert ids == [f"train{k:02d}" for k in range(24)]
    dataset = _converted_dataset(converted, skip_bad_records=True)
    assert len(_clip_ids(dataset)) == 24 and dataset.bad_records.events == []


def test_recorded_num_records_counts_what_the_converter_wrote(converted, shards):
    train = sorted(str(path) for path in converted.glob("train-*.tfrecord"))
    assert shard_reader.recorded_num_records(train) == 24
    assert shard_reader.recorded_num_records(train[:1]) == 8
    unrecorded = shard_reader.resolve_files(shards)
    assert shard_reader.recorded_num_records([*train, *unrecorded]) is None


def _record_of_size(size):
    """A valid example whose TFRecord framing takes exactly `size` bytes."""
    for samples in range((size - 200) // 2, (size - 100) // 2):
        for length in range(1, 30):
            record = schema.encode_example(np.zeros(samples), "x" * length, [0],
                                           original_sample_rate=RATE, duration=0.1)
            if len(record) + 16 == size:
                return record
    raise AssertionError(size)


def test_a_recorded_shard_of_the_same_size_with_fewer_records_is_found(converted):
    """Shard 1 replaced by 7 valid records filling its 27,160 bytes: the stat passes, the
    record count at the end of the shard does not."""
    path = _shard(converted, 1)
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records[:6]:
            writer.write(record)
        writer.write(_record_of_size(2 * 3395))
    assert path.stat().st_size == 27160
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"train-00001-of-00003\.tfrecord:\] \[it holds 7 records, "
                             r"the converter wrote 27,160 bytes \(8 records\): the file was "
                             r"replaced; 1 of its 8 records lost"):
        list(_converted_dataset(converted))
    dataset = _converted_dataset(converted, skip_bad_records=True)
    assert len(_clip_ids(dataset)) == 23
    assert (dataset.bad_records.records, dataset.bad_records.shards) == (1, 1)
