"""Shared machinery of the converters: work items -> sharded, resumable TFRecords + reports.

`convert_split` turns a list of `WorkItem`s (one per clip) into
`<output_dir>/<split>-<shard:05d>-of-<num_shards:05d>.tfrecord` files in the schema of
`keras_astpe.data.schema`:

- Sharding is deterministic: items are sorted by clip id and packed in that order into
  shards of about `shard_mb` MB, estimated from each item's `expected_seconds` of 16-bit
  16 kHz audio (no file is opened to plan).
- Decoding runs in `num_workers` processes (started from a fork server, so that the parent's
  TensorFlow threads are never forked); the parent writes the records in order.
- Resumable: a shard is written to `<name>.partial` and renamed when complete; then
  `<split>-manifest.json` (replaced atomically) records it with its size and statistics. A
  re-run of the same command keeps every recorded shard whose file still has the recorded
  size and writes only the others, so a killed run never leaves a half shard that looks
  complete. A manifest made from a different item list is an error unless `overwrite`.
- Nothing is lost silently: every file that could not be decoded is listed in
  `<split>-skipped.csv` (path, clip_id, reason, message), every expected clip without a
  file in `<split>-missing.txt`, and `<split>-summary.json` holds the counts (clips
  written, skipped per reason, missing, total duration, label counts per class) that the
  training pipeline can use, e.g. for class weights.
"""

import collections
import csv
import dataclasses
import glob
import hashlib
import io
import json
import multiprocessing
import os

import numpy as np
import tensorflow as tf
from absl import flags
from tqdm import tqdm

from keras_astpe.data import schema
from keras_astpe.data.audio_io import AudioDecodeError, load_audio

DEFAULT_SHARD_MB = 150.0
# Bytes of one second of 16-bit mono audio at the schema's rate, and the per-record
# overhead of the other features and TFRecord framing: what sizes the shards.
_BYTES_PER_SECOND = 2 * schema.SAMPLE_RATE
_RECORD_OVERHEAD = 256
# A file this much longer than its segment is a longer recording (e.g. the whole video):
# the segment is cut out of it.
SEGMENT_TOLERANCE_SECONDS = 1.0
_MANIFEST_FORMAT = 1
AUDIO_EXTENSIONS = frozenset(
    ("wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "mp4", "webm", "aif",
     "aiff"))


class ConversionError(RuntimeError):
    """The inputs or the output directory are not in a state the converter can work with."""


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One clip to convert.

    `expected_seconds` only sizes the shards. `segment` = (start, end) in seconds marks a
    clip that is a segment of a longer recording: if the decoded file is longer than the
    segment by more than `SEGMENT_TOLERANCE_SECONDS`, the segment is cut out of it.
    """

    path: str
    clip_id: str
    labels: tuple
    fold: int = schema.NO_FOLD
    expected_seconds: float = 10.0
    segment: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A clip that was not written, and why (`reason` is machine-readable)."""

    path: str
    clip_id: str
    reason: str
    message: str


def is_audio_file(name):
    """Whether `name` has one of the extensions the converters pick up."""
    return name.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS if "." in name else False


def shard_name(split, index, num_shards):
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def assign_shards(items, shard_mb):
    """Packs `items` (in the given order) into consecutive shards of about `shard_mb` MB."""
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive, got {shard_mb}")
    budget = shard_mb * 1e6
    shards, current, current_bytes = [], [], 0.0
    for item in items:
        size = item.expected_seconds * _BYTES_PER_SECOND + _RECORD_OVERHEAD
        if current and current_bytes + size > budget:
            shards.append(current)
            current, current_bytes = [], 0.0
        current.append(item)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def write_classes_csv(path, names):
    """Writes `index,category` rows: the class list of ESC-50 and folder datasets."""
    _atomic_write(path, _csv_text([("index", "category"), *enumerate(names)]))


def read_class_names(path):
    """Class names by index from a `classes.csv` or an AudioSet `class_labels_indices.csv`.

    The name is the last column (`category` or `display_name`); indices must be 0..N-1.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][0] != "index":
        raise ConversionError(f"{path}: expected a header starting with 'index'")
    names = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            names[int(row[0])] = row[-1]
        except ValueError:
            raise ConversionError(f"{path}:{line}: bad class index {row[0]!r}") from None
    if sorted(names) != list(range(len(names))):
        raise ConversionError(f"{path}: class indices are not 0..{len(names) - 1}")
    return [names[index] for index in range(len(names))]


def convert_split(items, *, output_dir, split, class_names, shard_mb=DEFAULT_SHARD_MB,
                  num_workers=None, missing=(), skipped=(), overwrite=False, progress=True,
                  extra_summary=None):
    """Writes the shards and reports of one split; returns the summary dict.

    Args:
        items: `WorkItem`s; clip ids must be unique, labels in `range(len(class_names))`.
        output_dir: created if needed.
        split: file name prefix of the split's shards and reports.
        class_names: names by class index (sizes the label counts).
        shard_mb: target shard size in MB (1e6 bytes).
        num_workers: decoding processes; None = `os.cpu_count()`, 1 = in this process.
        missing: clip ids expected by the dataset's lists that have no audio file.
        skipped: `Skipped` clips the converter rejected before decoding (e.g. no known label).
        overwrite: replace shards of `split` made from a different item list.
        progress: show a tqdm progress bar.
        extra_summary: converter-specific entries added to the summary.
    """
    items = sorted(items, key=lambda item: item.clip_id)
    _check_items(items, split, len(class_names))
    os.makedirs(output_dir, exist_ok=True)
    shards = assign_shards(items, shard_mb)
    names = [shard_name(split, index, len(shards)) for index in range(len(shards))]
    manifest_path = os.path.join(output_dir, f"{split}-manifest.json")
    manifest = _open_manifest(manifest_path, output_dir, split,
                              _fingerprint(items, shard_mb), len(shards), overwrite)
    # Leftovers of a killed run: a half-written shard, a half-written report or manifest.
    for pattern in (f"{split}-*.partial", f"{split}-*.tmp[0-9]*"):
        for leftover in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
            os.remove(leftover)

    pending = [index for index, name in enumerate(names)
               if not _shard_is_complete(manifest, output_dir, name)]
    if len(pending) < len(names):
        print(f"[{split}] resuming: {len(names) - len(pending)} of {len(names)} shards "
              "already complete", flush=True)
    _write_shards(shards, names, pending, output_dir, manifest, manifest_path, split,
                  num_workers, progress)
    return _finish(manifest, names, output_dir, split, class_names, missing, skipped,
                   extra_summary or {})


def _check_items(items, split, num_classes):
    seen = set()
    for item in items:
        if item.clip_id in seen:
            raise ConversionError(f"[{split}] duplicate clip id {item.clip_id!r}")
        seen.add(item.clip_id)
        bad = [label for label in item.labels if not 0 <= label < num_classes]
        if bad:
            raise ConversionError(f"[{split}] {item.clip_id!r} has labels {bad} outside "
                                  f"0..{num_classes - 1}")


def _fingerprint(items, shard_mb):
    digest = hashlib.sha256(f"{_MANIFEST_FORMAT}|{shard_mb!r}".encode())
    for item in items:
        digest.update(repr(dataclasses.astuple(item)).encode())
    return digest.hexdigest()


def _open_manifest(path, output_dir, split, fingerprint, num_shards, overwrite):
    """Loads the manifest of a resumable run, or starts a new one (after checks)."""
    existing = sorted(glob.glob(os.path.join(glob.escape(output_dir),
                                             f"{split}-[0-9]*-of-[0-9]*.tfrecord")))
    manifest = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("fingerprint") == fingerprint:
            return manifest
    if (manifest is not None or existing) and not overwrite:
        what = "a manifest from a different item list or shard size" if manifest else (
            f"{len(existing)} shard file(s) but no manifest")
        raise ConversionError(
            f"{output_dir} already holds split {split!r} ({what}): pass --overwrite to "
            "replace it, or choose another --output_dir")
    for stale in existing:
        os.remove(stale)
    manifest = {"format": _MANIFEST_FORMAT, "split": split, "fingerprint": fingerprint,
                "num_shards": num_shards, "completed": {}}
    _atomic_write(path, json.dumps(manifest, indent=1))
    return manifest


def _shard_is_complete(manifest, output_dir, name):
    record = manifest["completed"].get(name)
    path = os.path.join(output_dir, name)
    return (record is not None and os.path.exists(path)
            and os.path.getsize(path) == record["bytes"])


def _write_shards(shards, names, pending, output_dir, manifest, manifest_path, split,
                  num_workers, progress):
    """Decodes the items of the pending shards in parallel and writes them in order."""
    work = [item for index in pending for item in shards[index]]
    if not work:
        return
    num_workers = max(1, min(num_workers or os.cpu_count() or 1, len(work)))
    bar = tqdm(total=len(work), desc=f"[{split}] clips", unit="clip", disable=not progress,
               dynamic_ncols=True)
    pool = None
    try:
        if num_workers == 1:
            results = map(_decode, work)
        else:
            pool = _worker_context().Pool(num_workers)
            chunksize = max(1, min(8, len(work) // (4 * num_workers)))
            results = pool.imap(_decode, work, chunksize=chunksize)
        for index in pending:
            manifest["completed"][names[index]] = _write_one_shard(
                shards[index], results, os.path.join(output_dir, names[index]), bar)
            _atomic_write(manifest_path, json.dumps(manifest, indent=1))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def _write_one_shard(items, results, path, bar):
    """Writes one shard to `<path>.partial`, renames it, returns its manifest record."""
    partial = path + ".partial"
    written, duration, labels, skipped = 0, 0.0, collections.Counter(), []
    with tf.io.TFRecordWriter(partial) as writer:
        for item in items:
            result = next(results)
            bar.update()
            if isinstance(result, Skipped):
                skipped.append(dataclasses.astuple(result))
                continue
            waveform, original_sample_rate, clip_duration = result
            writer.write(schema.encode_example(
                waveform, item.clip_id, item.labels, original_sample_rate=original_sample_rate,
                duration=clip_duration, fold=item.fold))
            written += 1
            duration += clip_duration
            labels.update(item.labels)
    os.replace(partial, path)
    return {"records": written, "bytes": os.path.getsize(path), "duration_seconds": duration,
            "label_counts": {str(label): count for label, count in sorted(labels.items())},
            "skipped": skipped}


def _worker_context():
    """A fork server: workers start once, without forking the parent's TensorFlow threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _decode(item):
    """Worker: (waveform, original_sample_rate, duration) or a `Skipped`."""
    try:
        audio = load_audio(item.path, schema.SAMPLE_RATE)
    except AudioDecodeError as error:
        return Skipped(item.path, item.clip_id, error.reason, error.message)
    waveform, duration = audio.waveform, audio.duration_seconds
    if item.segment is not None:
        start, end = item.segment
        if duration > end - start + SEGMENT_TOLERANCE_SECONDS:
            if duration <= start:
                return Skipped(item.path, item.clip_id, "segment_out_of_range",
                               f"the file lasts {duration:.2f} s, so it cannot hold the "
                               f"segment {start:g}-{end:g} s")
            rate = schema.SAMPLE_RATE
            waveform = waveform[round(start * rate):round(end * rate)]
            duration = min(end, duration) - start
    return waveform, audio.original_sample_rate, duration


def _finish(manifest, names, output_dir, split, class_names, missing, pre_skipped, extra):
    """Writes the skipped/missing reports and the summary, prints it, returns it."""
    records = [manifest["completed"][name] for name in names]
    skipped = [dataclasses.astuple(entry) for entry in pre_skipped]
    skipped += [tuple(entry) for record in records for entry in record["skipped"]]
    label_counts = np.zeros(len(class_names), dtype=np.int64)
    for record in records:
        for label, count in record["label_counts"].items():
            label_counts[int(label)] += count
    by_reason = collections.Counter(entry[2] for entry in skipped)
    missing = sorted(missing)

    skipped_path = os.path.join(output_dir, f"{split}-skipped.csv")
    missing_path = os.path.join(output_dir, f"{split}-missing.txt")
    _atomic_write(skipped_path, _csv_text([("path", "clip_id", "reason", "message"),
                                           *skipped]))
    _atomic_write(missing_path, "".join(f"{clip_id}\n" for clip_id in missing))
    summary = {
        "split": split,
        "num_shards": len(names),
        "shards": names,
        "clips_written": sum(record["records"] for record in records),
        "skipped": sum(by_reason.values()),
        "skipped_by_reason": dict(sorted(by_reason.items())),
        "missing": len(missing),
        "total_duration_seconds": sum(record["duration_seconds"] for record in records),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "label_counts": label_counts.tolist(),
        "skipped_report": os.path.basename(skipped_path),
        "missing_report": os.path.basename(missing_path),
        **extra,
    }
    _atomic_write(os.path.join(output_dir, f"{split}-summary.json"),
                  json.dumps(summary, indent=1))

    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(by_reason.items()))
    print(f"[{split}] wrote {summary['clips_written']} clips "
          f"({summary['total_duration_seconds'] / 3600:.2f} h) in {len(names)} shards to "
          f"{output_dir}; skipped {summary['skipped']}" + (f" ({reasons})" if reasons else "")
          + f"; missing {len(missing)}", flush=True)
    if skipped:
        print(f"[{split}] skipped files and reasons: {skipped_path}", flush=True)
    if missing:
        print(f"[{split}] clips without an audio file: {missing_path}", flush=True)
    return summary


def _csv_text(rows):
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def _atomic_write(path, text):
    """Writes a text file through a temporary name, so it is never seen half written."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def define_common_flags():
    """Defines the flags every converter CLI shares (call from the CLI's `__main__`).

    The CLI then calls `flags.adopt_module_key_flags(common)` so `--help` lists them.
    """
    flags.DEFINE_string("output_dir", None, "Folder for the shards, reports and class list "
                        "(created if needed).", required=True)
    flags.DEFINE_float("shard_mb", DEFAULT_SHARD_MB,
                       "Target shard size in MB of 16 kHz 16-bit audio; shards are planned "
                       "from the expected clip durations.")
    flags.DEFINE_integer("num_workers", os.cpu_count(),
                         "Decoding processes (1 decodes in the main process).")
    flags.DEFINE_bool("overwrite", False,
                      "Replace the shards of a split that output_dir already holds from a "
                      "different input list. Without it such a run stops; a re-run of the "
                      "same command always resumes, keeping the completed shards.")
