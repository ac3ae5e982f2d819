"""What a converted dataset holds, as its converter recorded it: `DatasetInfo`.

This module reads and writes `dataset.json` and the class lists. The converters of
`tfrecords_tools` write `dataset.json` next to the shards (format below, `record_split`)
and update it, atomically, each time a split is complete: the class names, whether the
labels are multi-label, the nominal clip length, and for each split its role, its shards
with their byte sizes and record counts, its clips and its folds. Consumers read it instead
of guessing from file names and constants, and the reader (`keras_astpe.data.pipeline`)
checks every shard against it, so that a missing, empty, cut or changed shard is never
read as if it were complete (`recorded_shards`).

    {"format": 1, "name": "esc50", "kind": "esc50", "multi_label": false,
     "clip_seconds": 5.0, "sample_rate": SAMPLE_RATE, "class_names": ["dog", ...],
     "converter": {"command": "python -m tfrecords_tools.esc50 ...", "version": "0.1.0"},
     "splits": {"esc50": {
         "role": "train", "cross_validation_folds": [1, 2, 3, 4, 5],
         "num_clips": 2000, "clips_per_fold": {"1": 400, ...}, "skipped": 0, "missing": 0,
         "shards": [{"file": "esc50-00000-of-00003.tfrecord", "bytes": 150011792,
                     "records": 937}, ...],
         "converter": {"command": "...", "version": "0.1.0"}}}}

Roles: `train`, `eval`, `validation`, `test` (`ROLES`). ESC-50 is one split, `esc50`, of
role `train` whose folds 1-5 are the folds of the paper's 5-fold cross-validation
(`cross_validation_folds`): each fold is the test set once.
"""

import contextlib
import csv
import dataclasses
import fcntl
import fnmatch
import glob
import json
import os
import posixpath

import tensorflow as tf

from keras_astpe.data.schema import SAMPLE_RATE
from keras_astpe.io_utils import atomic_write_text

DATASET_FILE = "dataset.json"
FORMAT = 1
ROLES = ("train", "eval", "validation", "test")
KINDS = ("audioset", "esc50", "folder", "csv")
ESC50_FOLDS = (1, 2, 3, 4, 5)
NOMINAL_CLIP_SECONDS = {"audioset": 10.0, "esc50": 5.0}
CLASS_FILES = {"audioset": "class_labels_indices.csv", "esc50": "classes.csv",
               "folder": "classes.csv", "csv": "classes.csv"}
# The command that writes each kind of dataset (`{data_dir}`, and `{split}` for AudioSet).
_COMMANDS = {
    "audioset": "python -m tfrecords_tools.audioset --input_dir=<AudioSet folder> "
                "--output_dir={data_dir} --splits={split}",
    "esc50": "python -m tfrecords_tools.esc50 --input_dir=<ESC-50-master> "
             "--output_dir={data_dir}",
    "folder": "python -m tfrecords_tools.folder --input_dir=<folder of class folders> "
              "--output_dir={data_dir}",
    "csv": "python -m tfrecords_tools.csv --csv=<labels.csv> --audio_dir=<audio folder> "
           "--output_dir={data_dir}",
}



class DatasetInfoError(ValueError):
    """A dataset description that cannot be read or does not fit the files."""


def shard_pattern(data_dir, split):
    """The glob of the shards of `split` in `data_dir`."""
    return _join(data_dir, f"{split}-[0-9]*-of-[0-9]*.tfrecord")


def converter_command(kind, data_dir, split=None):
    """The command that writes split `split` (None: every split) of a `kind` dataset."""
    if kind not in _COMMANDS:
        return " or ".join(converter_command(known, data_dir) for known in KINDS)
    command = _COMMANDS[kind].format(data_dir=data_dir, split=split)
    return command.replace(" --splits=None", "")


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard as the converter wrote it (`num_bytes`, `num_records`; None if unknown)."""

    path: str
    num_bytes: int | None
    num_records: int | None


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """One split: `role` (one of `ROLES`), its `shards` in order, its clips and folds.

    `clips_per_fold` maps each fold present to its clips ({} for a dataset without folds).
    `cross_validation_folds`:
    the folds that take turns as the test set (ESC-50), () otherwise. `command`: what
    (re)writes the split.
    """

    name: str
    role: str
    shards: tuple
    num_clips: int
    clips_per_fold: dict
    cross_validation_folds: tuple
    command: str

    @property
    def paths(self):
        return [shard.path for shard in self.shards]

    @property
    def num_bytes(self):
        return [shard.num_bytes for shard in self.shards]

    @property
    def num_records(self):
        return [shard.num_records for shard in self.shards]


class DatasetInfo:
    """A converted dataset: `name`, `kind` (`KINDS`), `class_names`, `num_classes`,
    `multi_label`, `clip_seconds` (the nominal clip length), `splits` ({name: SplitInfo}),
    `converter` (command and version of the last conversion) and `source` (the file it was
    read from).
    """

    def __init__(self, data_dir, *, name, kind, class_names, multi_label, clip_seconds,
                 splits, converter, source):
        self.data_dir = data_dir
        self.name = name
        self.kind = kind
        self.class_names = tuple(class_names)
        self.multi_label = multi_label
        self.clip_seconds = clip_seconds
        self.splits = splits
        self.converter = converter
        self.source = source

    @property
    def num_classes(self):
        return len(self.class_names)

    def __repr__(self):
        return (f"DatasetInfo({self.data_dir!r}, name={self.name!r}, kind={self.kind!r}, "
                f"num_classes={self.num_classes}, multi_label={self.multi_label}, "
                f"clip_seconds={self.clip_seconds}, splits={sorted(self.splits)})")

    @classmethod
    def load(cls, data_dir, kind=None):
        """Reads `<data_dir>/dataset.json`. `kind` (`KINDS`, optional) names the converter
        to suggest when `data_dir` holds no dataset."""
        data_dir = os.fspath(data_dir)
        path = _join(data_dir, DATASET_FILE)
        if not tf.io.gfile.exists(path):
            what = "does not exist" if not tf.io.gfile.isdir(data_dir) else \
                f"holds no {DATASET_FILE}"
            raise FileNotFoundError(f"{data_dir} {what}: write the dataset with: "
                                    f"{converter_command(kind, data_dir)}")
        return cls._from_manifest(data_dir, _read_json(path, kind, data_dir))

    def split(self, split):
        """The `SplitInfo` of `split`; an error naming the splits there are and the command
        that writes `split`."""
        if split in self.splits:
            return self.splits[split]
        pattern = shard_pattern(self.data_dir, split)
        held = (f"holds the splits {sorted(self.splits)}" if self.splits
                else "holds no split")
        raise FileNotFoundError(
            f"No TFRecords of split {split!r}: expected {pattern}, but {self.data_dir} "
            f"{held}. Write them with: {converter_command(self.kind, self.data_dir, split)}")

    def split_files(self, split):
        """The shard paths of `split`, sorted, as the converter recorded them (a shard that
        is missing now is listed: the reader reports it). A `FileNotFoundError` naming the
        expected pattern and the converter command when the split has no shard."""
        info = self.split(split)
        if not info.shards:
            raise FileNotFoundError(
                f"No TFRecords of split {split!r} in {self.data_dir}: the converter wrote no "
                f"clip (expected {shard_pattern(self.data_dir, split)}; see "
                f"{_join(self.data_dir, split + '-missing.txt')} and "
                f"{_join(self.data_dir, split + '-skipped.csv')}). Rewrite it with: "
                f"{info.command}")
        return sorted(info.paths)

    def splits_with_role(self, role):
        """Names of the splits of `role` (one of `ROLES`), in sorted order."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return sorted(name for name, info in self.splits.items() if info.role == role)

    def clips_per_fold(self, split):
        """{fold: clips} of `split` ({} when it has no folds)."""
        return dict(self.split(split).clips_per_fold)

    def num_clips(self, split, folds=None):
        """Clips the converter wrote in `split`, or in its `folds` (e.g. ESC-50 folds)."""
        info = self.split(split)
        if folds is None:
            return info.num_clips
        per_fold = self.clips_per_fold(split)
        if not per_fold:
            raise ValueError(f"split {split!r} of {self.data_dir} has no folds; got "
                             f"folds={list(folds)}")
        unknown = sorted(set(folds) - set(per_fold))
        if unknown:
            raise ValueError(f"split {split!r} of {self.data_dir} has no clip in folds "
                             f"{unknown} (it holds folds {sorted(per_fold)})")
        return sum(per_fold[fold] for fold in set(folds))

    @classmethod
    def _from_manifest(cls, data_dir, content):
        path = _join(data_dir, DATASET_FILE)
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            found = content.get("format") if isinstance(content, dict) else None
            raise DatasetInfoError(f"{path}: format {found!r}, this version of keras_astpe "
                                   f"reads format {FORMAT}")
        try:
            kind = content["kind"]
            splits = {name: _split_from_manifest(data_dir, name, entry)
                      for name, entry in content["splits"].items()}
            info = cls(data_dir, name=str(content["name"]), kind=kind,
                       class_names=[str(name) for name in content["class_names"]],
                       multi_label=bool(content["multi_label"]),
                       clip_seconds=float(content["clip_seconds"]), splits=splits,
                       converter=dict(content.get("converter", {})), source=path)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            what = f"no {error}" if isinstance(error, KeyError) else str(error)
            raise DatasetInfoError(
                f"{path}: not a dataset manifest of format {FORMAT} ({what}): reconvert the "
                f"dataset ({converter_command(content.get('kind'), data_dir)})") from None
        return info


@contextlib.contextmanager
def _manifest_lock(directory):
    """Holds an exclusive lock on `directory` (converters of other splits of one dataset
    update its `dataset.json` in turn)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _read_manifest(directory):
    path = os.path.join(directory, DATASET_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetInfoError(
            f"{path} is damaged ({error}): delete it and convert every split of "
            f"{directory} again (converted shards are kept)") from None


def read_manifest(directory):
    """The content of `<directory>/dataset.json` (a local folder being converted), or None
    if there is none."""
    with _manifest_lock(directory):
        return _read_manifest(directory)


def _write_manifest(directory, content):
    atomic_write_text(os.path.join(directory, DATASET_FILE),
                      json.dumps(content, indent=1) + "\n")


def forget_split(directory, split):
    """Drops `split` from `dataset.json` (its shards are about to be replaced)."""
    with _manifest_lock(directory):
        content = _read_manifest(directory)
        if content is not None and content.get("splits", {}).pop(split, None) is not None:
            _write_manifest(directory, content)


def record_split(directory, split, entry, *, name, kind, class_names, multi_label,
                 clip_seconds, converter, replace_other=False):
    """Adds (or replaces) `split`, described by `entry`, in `dataset.json`, keeping the
    other splits; `clip_seconds(split entries)` gives the dataset's nominal clip length.
    `replace_other`: a dataset of another kind or classes there is replaced."""
    with _manifest_lock(directory):
        for leftover in glob.glob(os.path.join(glob.escape(directory),
                                               f".tmp-{DATASET_FILE}-*")):
            os.remove(leftover)  # only a killed run leaves one: writers hold the lock
        content = _read_manifest(directory) or {}
        if replace_other and (content.get("kind"), content.get("class_names")) != (
                kind, list(class_names)):
            content = {}
        splits = {**content.get("splits", {}), split: entry}
        _write_manifest(directory, {
            "format": FORMAT, "name": name, "kind": kind, "class_names": list(class_names),
            "multi_label": multi_label, "clip_seconds": clip_seconds(splits.values()),
            "sample_rate": SAMPLE_RATE, "converter": converter,
            "splits": dict(sorted(splits.items()))})


def read_class_names(path):
    """Class names by index from a class list: `classes.csv` of the converters or AudioSet's
    `class_labels_indices.csv` (a header starting with `index`, the name in the last column,
    indices 0..N-1); a `DatasetInfoError` naming the line otherwise."""
    path = os.fspath(path)
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.reader(f.read().lstrip("\ufeff").splitlines()))
    if not rows or not rows[0] or rows[0][0] != "index":
        raise DatasetInfoError(f"{path}: expected a header starting with 'index'")
    names = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(rows[0]):
            raise DatasetInfoError(f"{path}:{line}: {len(row)} fields, the header has "
                                   f"{len(rows[0])} ({','.join(rows[0])})")
        try:
            names[int(row[0])] = row[-1]
        except ValueError:
            raise DatasetInfoError(f"{path}:{line}: bad class index {row[0]!r}") from None
    if not names or sorted(names) != list(range(len(names))):
        raise DatasetInfoError(f"{path}: class indices are not 0..{len(names) - 1}"
                               if names else f"{path}: no class")
    return [names[index] for index in range(len(names))]


def recorded_shards(directory):
    """{path: ShardInfo} of every shard the converter recorded in `directory`: from
    `dataset.json`, and for splits it does not list from `<split>-manifest.json` (the
    converter's per-split record, which has every completed shard). {} when there is none.
    """
    directory = os.fspath(directory)
    shards, described = {}, set()
    path = _join(directory, DATASET_FILE)
    if tf.io.gfile.exists(path):
        for split in DatasetInfo._from_manifest(
                directory, _read_json(path, None, directory)).splits.values():
            described.add(split.name)
            shards.update((shard.path, shard) for shard in split.shards)
    for path in sorted(tf.io.gfile.glob(_join(directory, "*-manifest.json"))):
        if posixpath.basename(path)[:-len("-manifest.json")] in described:
            continue
        content = _read_json(path, None, directory)
        completed = content.get("completed") if isinstance(content, dict) else None
        if not isinstance(completed, dict):
            continue  # not a converter's manifest
        for name, record in completed.items():
            try:
                shards[_join(directory, name)] = ShardInfo(
                    _join(directory, name), int(record["bytes"]), int(record["records"]))
            except (KeyError, TypeError, ValueError):
                raise DatasetInfoError(f"{path}: shard {name!r} has no valid bytes and "
                                       f"records; reconvert the split") from None
    return shards


def recorded_shards_matching(pattern):
    """The recorded shards (see `recorded_shards`) whose paths match the glob `pattern`."""
    pattern = os.fspath(pattern)
    folder = posixpath.dirname(pattern) if "://" in pattern else os.path.dirname(pattern)
    folders = (tf.io.gfile.glob(folder) if any(char in folder for char in "*?[")
               else [folder])
    return {path: shard for folder in folders if tf.io.gfile.isdir(folder or ".")
            for path, shard in recorded_shards(folder).items()
            if fnmatch.fnmatchcase(path, pattern)}


def _join(directory, name):
    return posixpath.join(directory, name) if "://" in directory else os.path.join(
        directory, name)


def _read_json(path, kind, data_dir):
    """The content of a JSON file the converter wrote; a one-line error if unreadable."""
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetInfoError(
            f"{path}: not valid JSON ({error}): the file is damaged; reconvert the dataset "
            f"({converter_command(kind, data_dir)})") from None
    except (OSError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or str(error)
        raise DatasetInfoError(f"{path}: cannot be read ({message})") from None


def _split_from_manifest(data_dir, name, entry):
    shards = tuple(ShardInfo(_join(data_dir, shard["file"]), int(shard["bytes"]),
                             int(shard["records"])) for shard in entry["shards"])
    role = entry["role"]
    if role not in ROLES:
        raise ValueError(f"split {name!r} has role {role!r}, not one of {ROLES}")
    return SplitInfo(
        name=name, role=role, shards=shards, num_clips=int(entry["num_clips"]),
        clips_per_fold={int(fold): int(count)
                        for fold, count in entry["clips_per_fold"].items()},
        cross_validation_folds=tuple(int(fold) for fold in entry["cross_validation_folds"]),
        command=str(entry.get("converter", {}).get("command", "")))
