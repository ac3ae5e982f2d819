"""The integrity-checked TFRecord reader: shards (`schema.py`) -> valid records.

Bad data never passes silently. Each shard is checked against what its converter recorded
(`dataset.json` or `<split>-manifest.json` next to it, see `keras_astpe.data.dataset_info`):
a missing shard, or one whose size differs, is an error naming it when the dataset is made
(a file stat, no read), and at its end-of-shard marker the bytes and the records read must
be those recorded. A shard that cannot be read, a truncated or corrupted shard and a record
that is not a valid schema example (found by counting the bytes the valid records cover
against the file size, then named by reading the shard again) raise an error naming the
file and the records. With `skip_bad_records=True` they are skipped instead, logged as
warnings and counted in the `BadRecordReport` at `dataset.bad_records`, with every record
of a recorded shard that is lost (missing shard, unreadable tail). Shards without a
converter's record are checked against their own size only. A wrong sample rate or a label
outside `[0, num_classes)` means the data do not fit the configuration and always raises.
"""

import functools
import logging
import os
import re
import threading

import numpy as np
import tensorflow as tf

from keras_astpe.data import dataset_info, schema

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
_RECORD_OVERHEAD = 16  # TFRecord framing: uint64 length + 2 x uint32 masked CRC
# The reader sums bytes + records x this in one int64 (shards up to 1 TB, 8M records).
_RECORD_WEIGHT = 2**40
_SKIP_HINT = "reconvert it, or skip bad data (--skip_bad_records, skip_bad_records=True)"
_CYCLE_LENGTH = 16  # shards read concurrently
_REMOTE_BUFFER = 256 * 1024  # read buffer for remote shards; local ones are read unbuffered
_GLOB_CHARS = "*?["

# Appended to each shard by the reader to mark its end: a valid, recognisable example.
_END_OF_SHARD_ID = "keras_astpe/end-of-shard"
_END_OF_SHARD = schema.encode_example(np.zeros(0), _END_OF_SHARD_ID, [],
                                      original_sample_rate=schema.SAMPLE_RATE, duration=0.0)
# What the reader parses: everything the pipeline needs, so no record is parsed twice.
_READ_FEATURES = {key: schema.FEATURES[key] for key in
                  ("audio/pcm16", "audio/sample_rate", "clip_id", "labels", "fold")}
# What `read_records` yields per record.
_RECORD_KEYS = ("pcm16", "path", "index", "clip_id", "labels", "fold")


class DamagedShardError(OSError):
    """A shard that is not what its converter recorded: missing, cut, or of another size."""


class BadRecordReport:
    """Counts what `skip_bad_records=True` skipped; every event is also logged as a warning.

    `records`: records skipped or lost: records that are not valid schema examples and, in a
    shard its converter recorded, every recorded record that could not be read (a missing
    shard, the tail after a cut or a corrupt record). `shards`: damaged shards (missing, cut
    short, corrupt, changed since conversion). `uncounted_shards`: damaged shards without a
    converter's record, whose records after the damage cannot be counted. `events`: one
    `(path, description)` per event; the same event seen again (a shard read once per
    epoch) is counted once.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.records = 0
        self.shards = 0
        self.uncounted_shards = 0
        self.events = []

    def _add(self, path, description, *, records=0, shards=0, uncounted=0):
        with self._lock:
            if (path, description) in self.events:
                return
            self.records += records
            self.shards += shards
            self.uncounted_shards += uncounted
            self.events.append((path, description))
            total = (self.records, self.shards)
        logger.warning("skipped bad data in %s: %s (skipped so far: %d records, %d damaged "
                       "shards)", path, description, *total)

    def __str__(self):
        uncounted = (f", {self.uncounted_shards} of them without a converter's record (the "
                     f"records lost after their damage are not counted)"
                     if self.uncounted_shards else "")
        return (f"{self.records} bad or lost records skipped, {self.shards} damaged "
                f"shards{uncounted} ({len(self.events)} events)")


def resolve_files(file_pattern):
    """Expands a glob or a list of paths/globs into sorted unique files.

    A missing file is an error, unless its converter recorded it (`dataset_info`): then it
    is listed, and the reader reports it as a damaged shard. So is a recorded shard that a
    glob would match.
    """
    if isinstance(file_pattern, (str, os.PathLike)):
        file_pattern = [file_pattern]
    files = []
    for pattern in map(os.fspath, file_pattern):
        if any(char in pattern for char in _GLOB_CHARS):
            matched = set(tf.io.gfile.glob(pattern))
            matched.update(dataset_info.recorded_shards_matching(pattern))
            if not matched:
                raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
            files.extend(sorted(matched))
        elif tf.io.gfile.isdir(pattern):
            raise IsADirectoryError(f"expected TFRecord files, got the directory {pattern!r}")
        elif not tf.io.gfile.exists(pattern) and pattern not in dataset_info.recorded_shards(
                os.path.dirname(pattern)):
            raise FileNotFoundError(f"TFRecord file not found: {pattern!r}")
        else:
            files.append(pattern)
    files = list(dict.fromkeys(files))
    if not files:
        raise ValueError("file_pattern is empty")
    for path in files:
        if "://" not in path and os.path.exists(path) and not os.access(path, os.R_OK):
            raise PermissionError(f"TFRecord file is not readable: {path!r}")
    return files


def _recorded(files):
    """{path: ShardInfo} of the `files` their converter recorded."""
    recorded = {}
    for folder in dict.fromkeys(os.path.dirname(path) for path in files):
        recorded.update(dataset_info.recorded_shards(folder))
    return {path: recorded[path] for path in files if path in recorded}


def recorded_num_records(files):
    """How many records the converter wrote to `files`, or None if it did not record them
    all (e.g. for a progress bar's total)."""
    recorded = _recorded(files)
    if len(recorded) < len(files) or any(shard.num_records is None
                                          for shard in recorded.values()):
        return None
    return sum(shard.num_records for shard in recorded.values())


def _size_change(size, expected):
    return ("the file was truncated or replaced" if size < expected else
            "the file was appended to or replaced")


def _check_shards(files, report):
    """The shards to read, as `(path, size, expected bytes, expected records)` (-1: not
    recorded), after the checks that need no read: a missing file, and a recorded shard
    whose size is not the recorded one, are errors (`report` None) or counted in `report`
    (missing) or at the shard's end (other size)."""
    recorded = _recorded(files)
    shards = []
    for path in files:
        expected = recorded.get(path)
        try:
            size = tf.io.gfile.stat(path).length
        except tf.errors.NotFoundError:
            if expected is None:
                raise FileNotFoundError(f"TFRecord file not found: {path!r}") from None
            size = None
        if expected is None:
            shards.append((path, size, -1, -1))
            continue
        wrote = (f"the converter wrote {expected.num_bytes:,} bytes "
                 f"({expected.num_records:,} records)")
        if size is None:
            if report is None:
                raise DamagedShardError(f"{path}: missing, {wrote}; {_SKIP_HINT}")
            report._add(path, f"missing, {wrote}: {expected.num_records:,} of its "
                        f"{expected.num_records:,} records lost",
                        records=expected.num_records, shards=1)
            continue
        if size != expected.num_bytes and report is None:
            raise DamagedShardError(f"{path}: {size:,} bytes, {wrote}: "
                                    f"{_size_change(size, expected.num_bytes)}; {_SKIP_HINT}")
        shards.append((path, size, expected.num_bytes, expected.num_records))
    if not shards:
        raise DamagedShardError(f"no shard left to read: the {len(files)} shard(s) from "
                                f"{files[0]} on are all missing")
    return shards


def _parse_record(record):
    """A serialized record -> what the reader keeps of it. Fails on a record that is not a
    schema example: not an Example, a feature missing or of the wrong type, an odd number of
    PCM bytes."""
    parsed = tf.io.parse_single_example(record, _READ_FEATURES)
    return {"pcm16": schema.decode_pcm16(parsed["audio/pcm16"]),
            "sample_rate": parsed["audio/sample_rate"], "clip_id": parsed["clip_id"],
            "labels": tf.sparse.to_dense(parsed["labels"]), "fold": parsed["fold"]}


def _short_message(error):
    """A TensorFlow error's message without its op and function decorations."""
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", error.message)
    return " ".join(message.split()).removesuffix(" name:").rstrip(".")


def _find_damage(path):
    """Reads one shard again, eagerly, as the reader does: `(invalid, cut, end, framed)`,
    the records that are not schema examples as `(index, reason)` pairs, why reading
    stopped before the end of the file (None if it did not), the byte where the records
    read end, and the number of records read."""
    invalid, cut, index, end = [], None, 0, 0
    records = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except tf.errors.OpError as error:  # DataLossError: a corrupt or truncated record
            cut = f"reading stops at record {index}: {_short_message(error)}"
            break
        end += _RECORD_OVERHEAD + len(record.numpy())
        try:
            _parse_record(record)
        except tf.errors.InvalidArgumentError as error:
            invalid.append((index, _short_message(error)))
        except UnicodeDecodeError:  # TensorFlow's message quotes the record's bytes
            invalid.append((index, "cannot parse it as a tf.train.Example"))
        index += 1
    return invalid, cut, end, index


def _describe_damage(path, size, covered, valid, expected_bytes, expected_records,
                     report=None):
    """What is wrong with a shard whose valid records do not add up to its size, or to what
    its converter recorded (`expected_*`, -1 if nothing): runs as a py_function, only then.
    With a `report`, records the damage in it."""
    path = path.numpy().decode()
    size, covered, valid = int(size), int(covered), int(valid)
    expected_bytes, expected_records = int(expected_bytes), int(expected_records)
    invalid, cut, end, framed = _find_damage(path)
    if cut is None and end < size:  # TensorFlow's reader takes a cut header for the end
        cut = f"the {size - end} bytes after the last record (at byte {end}) are a cut header"
    parts = []
    if invalid:
        shown = "; ".join(f"record {index}: {reason}" for index, reason in invalid[:3])
        parts.append(f"{len(invalid)} record(s) are not keras_astpe examples (corrupt, or not "
                     f"written with keras_astpe.data.schema): {shown}"
                     + ("; ..." if len(invalid) > 3 else ""))
    if cut:
        parts.append(f"corrupt or truncated, {cut}")
    if expected_records >= 0:  # the converter recorded the shard: count what is lost
        wrote = (f"the converter wrote {expected_bytes:,} bytes ({expected_records:,} "
                 f"records)")
        if size != expected_bytes:
            parts.insert(0, f"{size:,} bytes, {wrote}: {_size_change(size, expected_bytes)}")
        elif framed != expected_records and not cut:
            parts.insert(0, f"it holds {framed:,} records, {wrote}: the file was replaced")
        lost = max(expected_records - valid, 0)
        parts.append(f"{lost:,} of its {expected_records:,} records lost")
        damaged = bool(cut) or size != expected_bytes or framed != expected_records
        counts = {"records": lost, "shards": int(damaged)}
    else:
        if not parts:
            parts.append(f"its records cover {covered} of {size} bytes (changed while read?)")
        damaged = bool(cut) or not invalid
        counts = {"records": len(invalid), "shards": int(damaged), "uncounted": int(damaged)}
    description = "; ".join(parts)
    if report is not None:
        report._add(path, description, **counts)
    return description


def _shard_records(path, size, expected_bytes, expected_records, buffer_size, *,
                   sample_rate, num_classes, single_label, report):
    """The valid records of one shard (`path`, `size`, the `expected_bytes` and
    `expected_records` its converter recorded or -1, `buffer_size`: scalar tensors), in
    order.

    Reading goes on past damage (`ignore_errors`), so the damage is found by bookkeeping:
    one `scan` parses each record and adds up, in one int64, the bytes and the records
    (x `_RECORD_WEIGHT`) of those that parse, and an end-of-shard marker compares that sum
    with the file size and the recorded record count (the bytes alone for a shard without
    a record). A record that fails to parse, a read that stops early or a shard that is not
    what was recorded leaves a mismatch; only then is the shard read again to say which
    records are bad and why. The other checks are `Assert` ops in the filter that drops the
    marker, built from string and int32 pieces that are formatted only when they fail, so a
    clean record costs one parse and one cheap filter.
    """
    # TFRecordDataset moves on to the next file after a read error, but retries a file it
    # cannot open forever under ignore_errors: check that the shard still exists.
    exists = tf.debugging.Assert(tf.size(tf.io.matching_files(path)) > 0,
                                 ["keras_astpe: TFRecord file not found:", path])
    with tf.control_dependencies([exists]):
        path = tf.identity(path)
    records = tf.data.TFRecordDataset(path, buffer_size=buffer_size).ignore_errors()
    records = records.concatenate(tf.data.Dataset.from_tensors(tf.constant(_END_OF_SHARD)))
    recorded = expected_records >= 0
    weight = tf.where(recorded, tf.constant(_RECORD_WEIGHT, tf.int64), 0)
    step = _RECORD_OVERHEAD + weight  # what a record adds to the sum, besides its bytes
    # The sum at the marker of an intact shard; a recorded shard of another size never
    # gets there, so that the reading of it is described and counted.
    end = tf.where(recorded, tf.where(tf.equal(size, expected_bytes),
                                      expected_bytes + expected_records * weight, -1), size)

    def read(state, record):
        # A record that fails to parse fails the whole step: `ignore_errors` drops it and the
        # state stays as it was, so its bytes are missing at the marker.
        index, offset = state
        length = step + tf.cast(tf.strings.length(record), tf.int64)
        element = _parse_record(record)
        element.update(is_end=tf.equal(element["clip_id"], _END_OF_SHARD_ID), path=path,
                       index=index, offset=offset)
        return (index + 1, offset + length), element

    def check(element):
        index, is_end, labels = element["index"], element["is_end"], element["labels"]
        where = [path, "record", tf.cast(index, tf.int32), "clip_id", element["clip_id"]]
        checks = [tf.debugging.Assert(
            tf.logical_or(is_end, tf.equal(element["sample_rate"], sample_rate)),
            ["keras_astpe: wrong audio/sample_rate in", *where, "sample_rate",
             tf.cast(element["sample_rate"], tf.int32), "expected", sample_rate])]
        if num_classes is not None:
            checks.append(tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(labels >= 0, labels < num_classes)),
                ["keras_astpe: label outside [0, num_classes) in", *where, "labels",
                 tf.cast(labels, tf.int32), "num_classes", num_classes]))
        if single_label:
            checks.append(tf.debugging.Assert(
                tf.logical_or(is_end, tf.equal(tf.size(labels), 1)),
                ["keras_astpe: multi_label=False needs exactly one label per clip; in", *where,
                 "labels", tf.cast(labels, tf.int32)]))
        damaged = tf.logical_and(is_end, tf.not_equal(element["offset"], end))
        describe = functools.partial(_describe_damage, report=report)
        description = tf.cond(damaged, lambda: tf.py_function(
            describe, [path, size, element["offset"] - index * weight, index, expected_bytes,
                       expected_records], tf.string), lambda: tf.constant(""))
        if report is None:
            checks.append(tf.debugging.Assert(tf.logical_not(damaged), [
                "keras_astpe: damaged TFRecord file", tf.strings.join([path, ":"]), description,
                "(make_dataset(skip_bad_records=True) skips and counts bad data)"]))
        else:
            checks.append(description)
        with tf.control_dependencies(checks):
            return tf.logical_not(is_end)

    return (records.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), read)
            .ignore_errors()
            .filter(check)
            .map(lambda element: {key: element[key] for key in _RECORD_KEYS}))


def read_records(files, *, sample_rate=schema.SAMPLE_RATE, num_classes=None,
                 single_label=False, report=None, shuffle_seed=None):
    """Valid records of `files` (from `resolve_files`), shards interleaved.

    Elements are dicts: `pcm16` (the int16 samples, which the front end takes as they are),
    `path`, `index` (position among the shard's valid records), `clip_id`, `labels` and
    `fold`. Labels are checked against `num_classes` (unless None) and, with `single_label`,
    to be exactly one per clip. Local shards are read unbuffered (the page cache buffers
    them; a user-space buffer would only add a copy of every record), remote ones through a
    256 KB buffer.
    Each shard is checked against its converter's record (see the module docstring).
    `report`: a `BadRecordReport` to skip and count bad data, None to raise.
    `shuffle_seed`: shuffle the shard order (again on each iteration), None keeps it.
    """
    shards = _check_shards(files, report)
    paths, sizes, expected_bytes, expected_records = (
        list(column) for column in zip(*shards, strict=True))
    buffers = [_REMOTE_BUFFER if "://" in path else 0 for path in paths]
    shards = tf.data.Dataset.from_tensor_slices(tuple(
        tf.constant(column, dtype) for column, dtype in (
            (paths, tf.string), (sizes, tf.int64), (expected_bytes, tf.int64),
            (expected_records, tf.int64), (buffers, tf.int64))))
    if shuffle_seed is not None:
        shards = shards.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return shards.interleave(
        lambda *shard: _shard_records(
            *shard, sample_rate=sample_rate, num_classes=num_classes,
            single_label=single_label, report=report),
        cycle_length=min(len(paths), _CYCLE_LENGTH), block_length=1,
        num_parallel_calls=AUTOTUNE)


def keep_folds(records, folds):
    """The records of `read_records` whose fold is one of `folds`."""
    folds = tf.constant(sorted(set(folds)), tf.int64)
    return records.filter(lambda element: tf.reduce_any(tf.equal(element["fold"], folds)))
