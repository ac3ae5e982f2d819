"""Shared machinery of the converters: work items -> sharded, resumable TFRecords + reports.

`convert_split` turns a list of `WorkItem`s (one per clip) into
`<output_dir>/<split>-<shard:05d>-of-<num_shards:05d>.tfrecord` files in the schema of
`keras_astpe.data.schema`:

- Sharding is deterministic: items are sorted by clip id and packed in that order into
  shards of about `shard_mb` MB, estimated from each item's `expected_seconds` of 16-bit
  16 kHz audio (no file is opened to plan).
- Decoding runs in `num_workers` processes (started from a fork server, so that the parent's
  TensorFlow threads are never forked); the parent writes the records in order.
- Resumable: every file is written atomically (`keras_astpe.io_utils.atomic_path`: under a
  temporary name, fsynced, renamed when complete); once a shard is complete,
  `<split>-manifest.json` records it with its size, record count and statistics. A re-run
  of the same command keeps every recorded shard whose file still has the recorded size
  and writes only the others, so a killed run never leaves a half shard that looks
  complete. A manifest made from a different item list is an error unless `overwrite`.
- Nothing is lost silently: every file that could not be decoded is listed in
  `<split>-skipped.csv` (path, clip_id, reason, message), every expected clip without a
  file in `<split>-missing.txt`, every clip whose samples exceed full scale (clipped to 16
  bit, as any 16-bit writer does; see `_decode`) in `<split>-clipped.csv`, and
  `<split>-summary.json` holds the counts (clips written, skipped per reason, missing,
  clipped, total duration, label counts per class).
- The dataset describes itself: when a split is complete, `dataset.json` (see
  `keras_astpe.data.dataset_info`) is updated under a lock, atomically, with the split's
  role, shards (bytes, records), clips and folds, next to the dataset's class names,
  labelling (multi-label or not), nominal clip length and converter command. Splits
  converted in separate runs accumulate; the reader checks every shard against it.
"""

import collections
import csv
import dataclasses
import datetime
import glob
import hashlib
import io
import json
import multiprocessing
import os
import shlex
import shutil

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import keras_astpe
from keras_astpe.cli import setting
from keras_astpe.data import dataset_info, schema
from keras_astpe.data.audio_io import AudioDecodeError, load_audio
from keras_astpe.io_utils import atomic_path, atomic_write_text

DEFAULT_SHARD_MB = 150.0
# Bytes of one second of 16-bit mono audio at the schema's rate, and the per-record
# overhead of the other features and TFRecord framing: what sizes the shards.
_BYTES_PER_SECOND = 2 * schema.SAMPLE_RATE
_RECORD_OVERHEAD = 256
# A file this much longer than its segment is a longer recording (e.g. the whole video):
# the segment is cut out of it.
SEGMENT_TOLERANCE_SECONDS = 1.0
_MANIFEST_FORMAT = 1


class ConversionError(RuntimeError):
    """The inputs or the output directory are not in a state the converter can work with."""


@dataclasses.dataclass(frozen=True)
class DatasetDescription:
    """What a converter knows of the whole dataset, for `dataset.json`.

    `kind`: one of `dataset_info.KINDS`. `clip_seconds`: the nominal clip length; None
    takes the most common clip duration (to 0.1 s) of the clips written. `command`: the
    command line that converts the dataset (see `command_line`).
    """

    name: str
    kind: str
    class_names: tuple
    multi_label: bool
    clip_seconds: float | None
    command: str


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
    atomic_write_text(path, _csv_text([("index", "category"), *enumerate(names)]))


def copy_file(source, destination):
    """Copies a file atomically (the copy is either absent, the previous one, or complete)."""
    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)


def read_csv(path, columns):
    """`(line, row)` pairs of a CSV file with a header, rows as dicts; `columns` must be in
    the header. A UTF-8 byte order mark (Excel's "CSV UTF-8") is read as such; a row with
    too few or too many fields is an error naming the file and line."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        absent = [column for column in columns if column not in header]
        if absent:
            raise ConversionError(f"{path}: missing columns {absent} (the header has "
                                  f"{header})")
        rows = []
        for row in reader:
            if None in row or None in row.values():
                fields = len(header) + len(row.get(None, ())) - list(row.values()).count(None)
                raise ConversionError(f"{path}:{reader.line_num}: {fields} fields, the header "
                                      f"has {len(header)} ({','.join(header)})")
            rows.append((reader.line_num, row))
    return rows


def register_tree(root, seen):
    """Enters in `seen` every real file and folder under `root` (symlinks not followed) with
    its own path, so that `walk_files` takes each at its real place rather than through a
    link that happens to be walked first."""
    for folder, subfolders, names in os.walk(root):
        _identity(folder, seen)
        for name in subfolders + names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                _identity(path, seen)


def walk_files(root, seen):
    """`(files, repeats)`: the files under `root`, sorted, following symlinks, each real
    file and folder once.

    `seen` maps each real file or folder (device, inode) to the path that takes it: its
    real place (see `register_tree`, done here for `root`; for several roots that link to
    each other, register them all first), else the first link walked. It is updated, so
    that one `seen` shared by several walks takes each real file once across them.
    `repeats` lists `(path, taken_path)` for the files and folders reached through another
    path: a symlink loop (a folder linked into itself), or a second link to one file or
    folder. They are not followed again.
    """
    register_tree(root, seen)
    files, repeats = [], []

    def taken_here(path):
        taken = _identity(path, seen)
        if taken is None:  # a dangling symlink: no file there
            return False
        if taken != path:
            repeats.append((path, taken))
        return taken == path

    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in sorted(subfolders)
                         if taken_here(os.path.join(folder, name))]
        files.extend(path for path in (os.path.join(folder, name) for name in sorted(names))
                     if taken_here(path))
    return files, repeats


def _identity(path, seen):
    """The path `seen` takes the real file or folder at `path` by (entering `path` if it is
    the first), or None if there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return seen.setdefault((stat.st_dev, stat.st_ino), path)


def command_line(module, **flag_values):
    """The shell command `python -m <module> --flag=value ...` (None values left out, lists
    joined by commas): how a dataset was converted, for `dataset.json`."""
    parts = ["python", "-m", module]
    for name, value in flag_values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        parts.append(f"--{name}={value}")
    return shlex.join(parts)


def convert_split(items, *, output_dir, split, role, dataset, cross_validation_folds=(),
                  shard_mb=DEFAULT_SHARD_MB, num_workers=None, missing=(), skipped=(),
                  overwrite=False, progress=True, extra_summary=None):
    """Writes the shards and reports of one split, records it in `dataset.json`; returns the
    summary dict.

    Args:
        items: `WorkItem`s; clip ids must be unique, labels in
            `range(len(dataset.class_names))`.
        output_dir: created if needed.
        split: file name prefix of the split's shards and reports.
        role: the split's role, one of `dataset_info.ROLES`.
        dataset: the `DatasetDescription` of the dataset the split belongs to.
        cross_validation_folds: folds that take turns as the test set (ESC-50: 1-5).
        shard_mb: target shard size in MB (1e6 bytes).
        num_workers: decoding processes; None = `os.cpu_count()`, 1 = in this process.
        missing: clip ids expected by the dataset's lists that have no audio file.
        skipped: `Skipped` clips the converter rejected before decoding (e.g. no known label).
        overwrite: replace shards of `split` made from a different item list, and a
            `dataset.json` of another dataset (other classes or kind).
        progress: show a tqdm progress bar.
        extra_summary: converter-specific entries added to the summary.
    """
    if role not in dataset_info.ROLES:
        raise ValueError(f"role must be one of {dataset_info.ROLES}, got {role!r}")
    items = sorted(items, key=lambda item: item.clip_id)
    _check_items(items, split, len(dataset.class_names))
    os.makedirs(output_dir, exist_ok=True)
    _check_dataset(output_dir, dataset, split, overwrite)
    shards = assign_shards(items, shard_mb)
    names = [shard_name(split, index, len(shards)) for index in range(len(shards))]
    manifest_path = os.path.join(output_dir, f"{split}-manifest.json")
    # Leftovers of a killed run: a half-written shard, report or manifest.
    for leftover in glob.glob(os.path.join(glob.escape(output_dir), f".tmp-{split}-*")):
        os.remove(leftover)
    manifest = _open_manifest(manifest_path, output_dir, split,
                              _fingerprint(items, shard_mb), len(shards), overwrite)

    pending = [index for index, name in enumerate(names)
               if not _shard_is_complete(manifest, output_dir, name)]
    if len(pending) < len(names):
        print(f"[{split}] resuming: {len(names) - len(pending)} of {len(names)} shards "
              "already complete", flush=True)
    _write_shards(shards, names, pending, output_dir, manifest, manifest_path, split,
                  num_workers, progress)
    summary = _finish(manifest, names, output_dir, split, dataset.class_names, missing,
                      skipped, extra_summary or {})
    _record_split(output_dir, dataset, split, summary, manifest, role=role,
                  cross_validation_folds=cross_validation_folds, overwrite=overwrite)
    return summary


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
    dataset_info.forget_split(output_dir, split)  # its shards are about to go
    for stale in existing:
        os.remove(stale)
    manifest = {"format": _MANIFEST_FORMAT, "split": split, "fingerprint": fingerprint,
                "num_shards": num_shards, "completed": {}}
    atomic_write_text(path, json.dumps(manifest, indent=1))
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
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def _write_one_shard(items, results, path, bar):
    """Writes one shard atomically, returns its manifest record."""
    written, duration, skipped, clipped = 0, 0.0, [], []
    labels, folds, durations = (collections.Counter() for _ in range(3))
    with atomic_path(path) as temporary:
        with tf.io.TFRecordWriter(temporary) as writer:
            for item in items:
                result = next(results)
                bar.update()
                if isinstance(result, Skipped):
                    skipped.append(dataclasses.astuple(result))
                    continue
                waveform, original_sample_rate, clip_duration, clipped_samples, peak = result
                writer.write(schema.encode_example(
                    waveform, item.clip_id, item.labels,
                    original_sample_rate=original_sample_rate, duration=clip_duration,
                    fold=item.fold))
                written += 1
                duration += clip_duration
                labels.update(item.labels)
                durations[f"{clip_duration:.1f}"] += 1
                if item.fold != schema.NO_FOLD:
                    folds[str(item.fold)] += 1
                if clipped_samples:
                    clipped.append((item.path, item.clip_id, clipped_samples, waveform.size,
                                    round(peak, 4)))
    return {"records": written, "bytes": os.path.getsize(path), "duration_seconds": duration,
            "label_counts": {str(label): count for label, count in sorted(labels.items())},
            "fold_counts": dict(sorted(folds.items())),
            "duration_counts": dict(sorted(durations.items())),
            "skipped": skipped, "clipped": clipped}


def _worker_context():
    """A fork server: workers start once, without forking the parent's TensorFlow threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _decode(item):
    """Worker: `(waveform, original_sample_rate, duration, clipped_samples, peak)` or a
    `Skipped`.

    Samples beyond full scale (float files louder than 0 dBFS, or the overshoot of a
    decoder or of resampling) are clipped to 16 bit when the clip is written, as by any
    16-bit writer, and never rescaled (that would change the clip's level against the
    others): `clipped_samples` counts them and `peak` is the largest magnitude, so that
    the summary and `<split>-clipped.csv` report every clip concerned.
    """
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
    scaled = np.round(waveform * 32767.0)  # as schema.encode_example writes it
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    return waveform, audio.original_sample_rate, duration, clipped, peak


def _finish(manifest, names, output_dir, split, class_names, missing, pre_skipped, extra):
    """Writes the skipped/missing/clipped reports and the summary, prints it, returns it."""
    records = [manifest["completed"][name] for name in names]
    skipped = [dataclasses.astuple(entry) for entry in pre_skipped]
    skipped += [tuple(entry) for record in records for entry in record["skipped"]]
    clipped = [tuple(entry) for record in records for entry in record.get("clipped", [])]
    label_counts = np.zeros(len(class_names), dtype=np.int64)
    for record in records:
        for label, count in record["label_counts"].items():
            label_counts[int(label)] += count
    by_reason = collections.Counter(entry[2] for entry in skipped)
    missing = sorted(missing)

    paths = {report: os.path.join(output_dir, f"{split}-{report}")
             for report in ("skipped.csv", "missing.txt", "clipped.csv", "summary.json")}
    atomic_write_text(paths["skipped.csv"], _csv_text(
        [("path", "clip_id", "reason", "message"), *skipped]))
    atomic_write_text(paths["missing.txt"], "".join(f"{clip_id}\n" for clip_id in missing))
    atomic_write_text(paths["clipped.csv"], _csv_text(
        [("path", "clip_id", "clipped_samples", "samples", "peak"), *clipped]))
    summary = {
        "split": split,
        "num_shards": len(names),
        "shards": names,
        "clips_written": sum(record["records"] for record in records),
        "skipped": sum(by_reason.values()),
        "skipped_by_reason": dict(sorted(by_reason.items())),
        "missing": len(missing),
        "clipped": {"clips": len(clipped),
                    "samples": sum(entry[2] for entry in clipped)},
        "total_duration_seconds": sum(record["duration_seconds"] for record in records),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "label_counts": label_counts.tolist(),
        "clips_per_fold": _sum_counts(record.get("fold_counts", {}) for record in records),
        "skipped_report": os.path.basename(paths["skipped.csv"]),
        "missing_report": os.path.basename(paths["missing.txt"]),
        "clipped_report": os.path.basename(paths["clipped.csv"]),
        **extra,
    }
    atomic_write_text(paths["summary.json"], json.dumps(summary, indent=1))

    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(by_reason.items()))
    print(f"[{split}] wrote {summary['clips_written']} clips "
          f"({summary['total_duration_seconds'] / 3600:.2f} h) in {len(names)} shards to "
          f"{output_dir}; skipped {summary['skipped']}" + (f" ({reasons})" if reasons else "")
          + f"; missing {len(missing)}", flush=True)
    if skipped:
        print(f"[{split}] skipped files and reasons: {paths['skipped.csv']}", flush=True)
    if missing:
        print(f"[{split}] clips without an audio file: {paths['missing.txt']}", flush=True)
    if clipped:
        worst = max(clipped, key=lambda entry: entry[2] / max(entry[3], 1))
        print(f"[{split}] {len(clipped)} clips exceed full scale: "
              f"{summary['clipped']['samples']} samples clipped to 16 bit (worst: "
              f"{worst[1]}, {worst[2] / max(worst[3], 1):.0%} of its samples, peak "
              f"{worst[4]:g}); see {paths['clipped.csv']}", flush=True)
    return summary


def _sum_counts(counters):
    total = collections.Counter()
    for counts in counters:
        total.update(counts)
    return {key: total[key] for key in sorted(total, key=float)}


def _check_dataset(output_dir, dataset, split, overwrite):
    """Stops before any work when `output_dir` holds another dataset (other classes, kind or
    labelling), unless `overwrite`."""
    try:
        content = dataset_info.read_manifest(output_dir)
    except dataset_info.DatasetInfoError as error:
        raise ConversionError(str(error)) from None
    if content is None or overwrite:
        return
    differences = [key for key, value in (("kind", dataset.kind),
                                          ("class_names", list(dataset.class_names)),
                                          ("multi_label", dataset.multi_label))
                   if content.get(key) != value]
    if differences:
        raise ConversionError(
            f"{output_dir} holds another dataset ({content.get('name')!r}, of other "
            f"{' and '.join(differences)}): pass --overwrite to replace it, or choose "
            "another --output_dir")


def _record_split(output_dir, dataset, split, summary, manifest, *, role,
                  cross_validation_folds, overwrite):
    """Adds (or replaces) `split` in `dataset.json`, keeping the other splits."""
    converter = {"command": dataset.command, "version": keras_astpe.__version__,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                     timespec="seconds")}
    records = [manifest["completed"][name] for name in summary["shards"]]
    entry = {
        "role": role,
        "num_clips": summary["clips_written"],
        "clips_per_fold": summary["clips_per_fold"],
        "cross_validation_folds": list(cross_validation_folds),
        "skipped": summary["skipped"],
        "missing": summary["missing"],
        "clipped_clips": summary["clipped"]["clips"],
        "total_duration_seconds": summary["total_duration_seconds"],
        "duration_counts": _sum_counts(record.get("duration_counts", {})
                                       for record in records),
        "shards": [{"file": name, "bytes": record["bytes"], "records": record["records"]}
                   for name, record in zip(summary["shards"], records, strict=True)],
        "summary": f"{split}-summary.json",
        "converter": converter,
    }
    dataset_info.record_split(
        output_dir, split, entry, name=dataset.name, kind=dataset.kind,
        class_names=dataset.class_names, multi_label=dataset.multi_label,
        clip_seconds=lambda splits: _clip_seconds(dataset, splits), converter=converter,
        replace_other=overwrite)


def _clip_seconds(dataset, splits):
    """The nominal clip length: given, or the most common clip duration (to 0.1 s; the
    longer one on a tie) of the splits."""
    if dataset.clip_seconds is not None:
        return float(dataset.clip_seconds)
    counts = _sum_counts(split.get("duration_counts", {}) for split in splits)
    if not counts:
        return 0.0
    return float(max(counts, key=lambda duration: (counts[duration], float(duration))))


def _csv_text(rows):
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """The flags every converter shares: where and how the shards are written."""

    output_dir: str = setting(help="Folder for the shards, reports and class list (created "
                              "if needed).", required=True)
    shard_mb: float = setting(DEFAULT_SHARD_MB, help="Target shard size in MB of 16 kHz 16-bit "
                              "audio; shards are planned from the expected clip durations.")
    num_workers: int = setting(os.cpu_count() or 1, help="Decoding processes (1 decodes in "
                               "the main process).")
    overwrite: bool = setting(False, help="Replace the shards of a split that output_dir "
                              "already holds from a different input list. Without it such a "
                              "run stops; a re-run of the same command always resumes, "
                              "keeping the completed shards.")

    def arguments(self):
        """The keyword arguments of the `convert_*` functions."""
        return dataclasses.asdict(self)
