"""A CSV of clips and their labels -> TFRecords: single- or multi-label, split by a column
or by a stable hash.

    python -m tfrecords_tools.csv --csv=labels.csv --audio_dir=clips --output_dir=data/mine

One row per clip: a path column, a label column and optionally a split or fold column.
Their names are found in the header (case-insensitive) unless given by a flag:

- path: the first of `PATH_COLUMNS` there (filename, fname, slice_file_name, ...). A path
  is relative to `--audio_dir` (default: the CSV's folder), or absolute. A bare file name
  that is not there is looked for in the folders under `--audio_dir` (UrbanSound8K's
  `fold<N>/`), and a name without extension is taken with the audio extension its file has
  (FSD50K's `fname`). The path as written, with `/` separators, is the clip's id.
- label: the first of `LABEL_COLUMNS` (labels, label, category, class, ...). Several labels
  in one field are separated by any character of `--label_separators` (default `,;`:
  FSD50K's quoted "Bark,Dog,Animal", or a;b). The data are multi-label when a clip has
  several labels (or with `--multi_label`). Classes are the labels in sorted order
  (numerically when all are integers). Rows naming the same file are one clip with the
  labels of all of them.
- split: the first of `SPLIT_COLUMNS` (split, fold), or none with `--split_column=none`.
  Integer values are folds (ESC-50, UrbanSound8K): one split `train` holding every clip
  with its fold, the folds being its cross-validation folds. Otherwise each value names a
  split (`SPLIT_NAMES`: train, val, validation, test, eval, ...). Without a split column,
  the clips are split by the file-name hash of `tfrecords_tools.splits` (as the folder
  converter does: `--validation_percent`, `--test_percent`).

Writes what the other converters write: `<split>-*.tfrecord`, the reports of
`tfrecords_tools.common` (`<split>-missing.txt`: rows whose file does not exist; the first
ones are also printed with their line numbers), `classes.csv` and `dataset.json` (kind
`csv`). A bad row (an empty path or label, an empty or unknown split value, a field too
many or too few) is an error naming its line; a missing column is an error naming the
columns the header has. Classes that only one split (or fold) has clips of are named in a
warning.
"""

import collections
import csv
import dataclasses
import os

from tqdm import tqdm

from keras_astpe import cli
from keras_astpe.cli import setting
from keras_astpe.data import audio_io, schema
from tfrecords_tools import common, splits

PATH_COLUMNS = ("filename", "fname", "slice_file_name", "file_name", "file", "path",
                "filepath", "file_path", "audio", "clip")
LABEL_COLUMNS = ("labels", "label", "category", "class", "classes", "tags", "target")
SPLIT_COLUMNS = ("split", "fold")
NO_SPLIT_COLUMN = "none"
DEFAULT_LABEL_SEPARATORS = ",;"
# Split column values (lower case) -> split name, which is also the split's role.
SPLIT_NAMES = {"train": "train", "training": "train", "val": "validation",
               "valid": "validation", "validation": "validation", "test": "test",
               "testing": "test", "eval": "eval", "evaluation": "eval"}
FOLD_SPLIT = "train"
# Sizes the shards when --clip_seconds is not given.
PLANNING_CLIP_SECONDS = 5.0
_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Clip:
    """One clip of the CSV: its id (the path as written), the lines naming it, its label
    names and its raw split value ('' without a split column)."""

    clip_id: str
    lines: tuple
    labels: tuple
    split_value: str


def find_column(header, given, candidates, what, flag, csv_path):
    """The header's column for `what`: `given` if not None (it must be there), else the
    first of `candidates` the header has (case-insensitive); None when none is."""
    if given is not None:
        if given not in header:
            raise common.ConversionError(f"{csv_path}: no column {given!r} (--{flag}); the "
                                         f"header has {header}")
        return given
    lower = {name.strip().lower(): name for name in reversed(header)}
    found = next((lower[name] for name in candidates if name in lower), None)
    if found is None and what != "split":
        raise common.ConversionError(
            f"{csv_path}: no {what} column (looked for {', '.join(candidates)}): pass "
            f"--{flag}; the header has {header}")
    return found


def read_clips(csv_path, *, path_column=None, label_column=None, split_column=None,
               label_separators=DEFAULT_LABEL_SEPARATORS):
    """`(clips, columns)`: the `Clip`s of the CSV in the order of their first row, and the
    {role: column} used. Rows naming the same path are merged (their split values must
    agree)."""
    header = _header(csv_path)
    columns = {
        "path": find_column(header, path_column, PATH_COLUMNS, "path", "path_column",
                            csv_path),
        "label": find_column(header, label_column, LABEL_COLUMNS, "label", "label_column",
                             csv_path),
        "split": None if split_column == NO_SPLIT_COLUMN else find_column(
            header, split_column, SPLIT_COLUMNS, "split", "split_column", csv_path)}
    lines = common.read_csv(csv_path, [column for column in columns.values() if column])
    if not lines:
        raise common.ConversionError(f"{csv_path}: no rows under the header")
    merged = {}
    for line, row in lines:
        clip_id = row[columns["path"]].strip().replace("\\", "/")
        while clip_id.startswith("./"):
            clip_id = clip_id[2:]
        if not clip_id:
            raise common.ConversionError(f"{csv_path}:{line}: empty path (column "
                                         f"{columns['path']!r})")
        labels = parse_labels(row[columns["label"]], label_separators)
        if not labels:
            raise common.ConversionError(f"{csv_path}:{line}: empty label for {clip_id!r} "
                                         f"(column {columns['label']!r})")
        split_value = row[columns["split"]].strip() if columns["split"] else ""
        if columns["split"] and not split_value:
            raise common.ConversionError(f"{csv_path}:{line}: empty split for {clip_id!r} "
                                         f"(column {columns['split']!r})")
        first = merged.get(clip_id)
        if first is None:
            merged[clip_id] = Clip(clip_id, (line,), labels, split_value)
            continue
        if first.split_value != split_value:
            raise common.ConversionError(
                f"{csv_path}:{line}: {clip_id!r} is in split {split_value!r} here but in "
                f"{first.split_value!r} on line {first.lines[0]}")
        merged[clip_id] = Clip(clip_id, (*first.lines, line),
                               tuple(dict.fromkeys(first.labels + labels)), split_value)
    return list(merged.values()), columns


def parse_labels(value, separators=DEFAULT_LABEL_SEPARATORS):
    """The label names of one field, split at any character of `separators`, stripped,
    without empty ones or repeats."""
    for separator in separators[1:]:
        value = value.replace(separator, separators[0])
    pieces = value.split(separators[0]) if separators else [value]
    return tuple(dict.fromkeys(piece.strip() for piece in pieces if piece.strip()))


def sorted_class_names(labels):
    """The class names in index order: sorted, numerically when all are integers."""
    names = set(labels)
    if all(_is_integer(name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def assign_splits(clips, csv_path, split_column):
    """`(mode, {clip_id: (split, fold)})`, mode `folds` (integer values), `named` (split
    names) or `hash` (no split column; filled in by the caller)."""
    if split_column is None:
        return "hash", {}
    if all(_is_integer(clip.split_value) for clip in clips):
        assigned = {}
        for clip in clips:
            fold = int(clip.split_value)
            if fold < 0:
                raise common.ConversionError(
                    f"{csv_path}:{clip.lines[0]}: fold {fold} of {clip.clip_id!r} is "
                    "negative (folds are integers >= 0)")
            assigned[clip.clip_id] = (FOLD_SPLIT, fold)
        return "folds", assigned
    assigned = {}
    for clip in clips:
        split = SPLIT_NAMES.get(clip.split_value.lower())
        if split is None:
            raise common.ConversionError(
                f"{csv_path}:{clip.lines[0]}: split {clip.split_value!r} of {clip.clip_id!r} "
                f"(column {split_column!r}) is not one of {', '.join(SPLIT_NAMES)} (or, for "
                "folds, an integer on every row)")
        assigned[clip.clip_id] = (split, None)
    return "named", assigned


class AudioFinder:
    """Finds the file of a CSV path under `audio_dir` (see the module docstring)."""

    def __init__(self, audio_dir):
        self.audio_dir = audio_dir
        self._by_name = None

    def find(self, clip_id):
        """`(path, None)`, `(None, None)` when there is no file, or `(None, message)` when
        several files fit a bare name."""
        path = os.path.join(self.audio_dir, clip_id)
        if os.path.isfile(path):
            return os.path.abspath(path), None
        bare = not audio_io.is_audio_file(clip_id)
        if bare:
            found = [path + "." + ext for ext in sorted(audio_io.AUDIO_EXTENSIONS)
                     if os.path.isfile(path + "." + ext)]
            if found:
                return self._one(clip_id, found)
        if "/" in clip_id or os.path.isabs(clip_id):
            return None, None
        found = self._files_named().get(clip_id if not bare else clip_id + ".", [])
        return self._one(clip_id, found) if found else (None, None)

    def _one(self, clip_id, found):
        if len(found) == 1:
            return os.path.abspath(found[0]), None
        shown = ", ".join(os.path.relpath(path, self.audio_dir) for path in found[:3])
        return None, (f"{clip_id!r} fits {len(found)} files under {self.audio_dir} "
                      f"({shown}): write its path relative to --audio_dir")

    def _files_named(self):
        """{file name: paths} and {stem + '.': paths} of the audio files under audio_dir,
        built on first use."""
        if self._by_name is None:
            self._by_name = collections.defaultdict(list)
            files, _ = common.walk_files(self.audio_dir, {})
            for path in files:
                name = os.path.basename(path)
                if audio_io.is_audio_file(name):
                    self._by_name[name].append(path)
                    self._by_name[name.rsplit(".", 1)[0] + "."].append(path)
        return self._by_name


def convert_csv(csv_path, output_dir, *, audio_dir=None, path_column=None,
                label_column=None, split_column=None,
                label_separators=DEFAULT_LABEL_SEPARATORS, multi_label=False,
                clip_seconds=None, validation_percent=splits.DEFAULT_VALIDATION_PERCENT,
                test_percent=splits.DEFAULT_TEST_PERCENT, shard_mb=common.DEFAULT_SHARD_MB,
                num_workers=None, overwrite=False, progress=True):
    """Converts the clips a CSV lists; returns {split: summary}.

    `split_column`: a column name, None to find one (`SPLIT_COLUMNS`), or `"none"` for the
    hash split even when the CSV has a split column. `clip_seconds`: the nominal clip
    length for `dataset.json`, also used to plan the shard sizes; None derives it from the
    clips (the most common duration).
    """
    if not os.path.isfile(csv_path):
        raise common.ConversionError(f"{csv_path}: no such file (--csv)")
    audio_dir = os.path.dirname(os.path.abspath(csv_path)) if audio_dir is None else audio_dir
    if not os.path.isdir(audio_dir):
        raise common.ConversionError(f"{audio_dir} is not a folder (--audio_dir)")
    splits.check_percents(validation_percent, test_percent)
    clips, columns = read_clips(csv_path, path_column=path_column, label_column=label_column,
                                split_column=split_column, label_separators=label_separators)
    class_names = sorted_class_names(label for clip in clips for label in clip.labels)
    index = {name: position for position, name in enumerate(class_names)}
    labelling = _report_labelling(clips, class_names, multi_label, csv_path)
    mode, assigned = assign_splits(clips, csv_path, columns["split"])
    if mode == "hash":
        assigned = {clip.clip_id: (splits.which_split(clip.clip_id, validation_percent,
                                                      test_percent), None) for clip in clips}

    finder = AudioFinder(audio_dir)
    # {split: (items, missing)}; the hash split writes its three splits, even empty ones.
    members = {split: ([], []) for split in splits.SPLITS} if mode == "hash" else {}
    missing_lines, taken = [], {}
    expected = clip_seconds or PLANNING_CLIP_SECONDS
    for clip in tqdm(clips, desc="finding files", unit="clip", disable=not progress,
                     dynamic_ncols=True):
        split, fold = assigned[clip.clip_id]
        members.setdefault(split, ([], []))
        path, problem = finder.find(clip.clip_id)
        if problem:
            raise common.ConversionError(f"{csv_path}:{clip.lines[0]}: {problem}")
        if path is None:
            members[split][1].append(clip.clip_id)
            missing_lines.append((clip.lines[0], clip.clip_id, split))
            continue
        real = os.path.realpath(path)
        if real in taken:
            raise common.ConversionError(
                f"{csv_path}:{clip.lines[0]}: {clip.clip_id!r} is the file of line "
                f"{taken[real]} too ({path})")
        taken[real] = clip.lines[0]
        members[split][0].append(common.WorkItem(
            path=path, clip_id=clip.clip_id,
            labels=tuple(sorted(index[label] for label in clip.labels)),
            fold=schema.NO_FOLD if fold is None else fold, expected_seconds=expected))
    _report_missing(missing_lines, len(clips), csv_path, audio_dir)

    members = {split: members[split] for split in sorted(members, key=_split_order)}
    if mode == "hash":
        splits.report_hash_split({split: items for split, (items, _) in members.items()},
                                 validation_percent, test_percent)
    else:
        print(f"split by column {columns['split']!r} ({mode}): " + ", ".join(
            f"{split} {len(items)}" for split, (items, _) in members.items()) + " clips",
              flush=True)
    folds = sorted({item.fold for items, _ in members.values() for item in items})
    if mode == "folds":
        print("clips per fold: " + ", ".join(
            f"{fold}: {sum(item.fold == fold for item in members[FOLD_SPLIT][0])}"
            for fold in folds), flush=True)
        groups = {fold: [item.labels for item in members[FOLD_SPLIT][0] if item.fold == fold]
                  for fold in folds}
        splits.warn_lonely_classes(groups, class_names, what="fold")
    else:
        splits.warn_lonely_classes({split: [item.labels for item in items]
                                    for split, (items, _) in members.items()}, class_names)

    os.makedirs(output_dir, exist_ok=True)
    common.write_classes_csv(os.path.join(output_dir, "classes.csv"), class_names)
    hash_flags = ({"validation_percent": validation_percent, "test_percent": test_percent}
                  if mode == "hash" else {})
    dataset = common.DatasetDescription(
        name=os.path.splitext(os.path.basename(csv_path))[0], kind="csv",
        class_names=tuple(class_names), multi_label=labelling, clip_seconds=clip_seconds,
        command=common.command_line(
            "tfrecords_tools.csv", csv=csv_path, audio_dir=audio_dir, output_dir=output_dir,
            path_column=path_column, label_column=label_column, split_column=split_column,
            label_separators=(None if label_separators == DEFAULT_LABEL_SEPARATORS
                              else label_separators),
            multi_label=multi_label or None, clip_seconds=clip_seconds, **hash_flags,
            shard_mb=shard_mb))
    rule = {"rule": "file-name hash", **hash_flags} if mode == "hash" else {
        "rule": mode, "column": columns["split"]}
    extra = {"csv": os.path.abspath(csv_path), "columns": columns, "split_rule": rule}
    return {split: common.convert_split(
        items, output_dir=output_dir, split=split, role=split, dataset=dataset,
        cross_validation_folds=folds if mode == "folds" else (), shard_mb=shard_mb,
        num_workers=num_workers, missing=missing, overwrite=overwrite, progress=progress,
        extra_summary=extra)
        for split, (items, missing) in members.items()}


def _header(csv_path):
    """The CSV's column names (a UTF-8 byte order mark is read as such)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _is_integer(value):
    return value.strip().lstrip("+-").isdigit()


def _split_order(split):
    order = ("train", "validation", "test", "eval")
    return (order.index(split) if split in order else len(order), split)


def _report_labelling(clips, class_names, multi_label, csv_path):
    """Prints the classes and the labelling; returns whether the data are multi-label."""
    several = [clip for clip in clips if len(clip.labels) > 1]
    if several:
        example = several[0]
        print(f"multi-label: {len(several)} of {len(clips)} clips have several labels (e.g. "
              f"{csv_path}:{example.lines[0]}: {', '.join(example.labels)})", flush=True)
    merged = [clip for clip in clips if len(clip.lines) > 1]
    if merged:
        print(f"note: {len(merged)} files are named on several rows, each one clip with the "
              f"labels of all its rows (e.g. {merged[0].clip_id!r}, lines "
              f"{', '.join(map(str, merged[0].lines))})", flush=True)
    multi_label = bool(multi_label or several)
    print(f"{len(class_names)} classes, {len(clips)} clips, "
          f"{'multi-label' if multi_label else 'single-label'}", flush=True)
    return multi_label


def _report_missing(missing_lines, num_clips, csv_path, audio_dir):
    """Prints the first rows without an audio file with their line numbers; an error when no
    row has one."""
    if not missing_lines:
        return
    line, clip_id, _ = missing_lines[0]
    if len(missing_lines) == num_clips:
        raise common.ConversionError(
            f"{csv_path}: none of its {num_clips} files is under {audio_dir} (e.g. line "
            f"{line}: {clip_id!r}): is --audio_dir the folder the paths are relative to?")
    for line, clip_id, _ in missing_lines[:_SHOWN]:
        print(f"warning: {csv_path}:{line}: no audio file {clip_id!r} under {audio_dir}",
              flush=True)
    splits_named = sorted({split for _, _, split in missing_lines}, key=_split_order)
    print(f"warning: {len(missing_lines)} of {num_clips} clips have no audio file, left out "
          f"(listed in {', '.join(f'{split}-missing.txt' for split in splits_named)})",
          flush=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CsvConversion:
    """The flags of `python -m tfrecords_tools.csv`."""

    csv: str = setting(help="CSV file with a header and one row per clip: a path column, a "
                       "label column, optionally a split or fold column.", required=True)
    audio_dir: str | None = setting(
        None, help="Folder the paths of the CSV are relative to (default: the CSV's folder). "
        "A bare file name not there is looked for in its sub-folders; a name without "
        "extension is taken with its file's audio extension.")
    path_column: str | None = setting(
        None, help="Column of the clip paths (default: the first of "
        f"{', '.join(PATH_COLUMNS)} in the header).")
    label_column: str | None = setting(
        None, help="Column of the labels (default: the first of "
        f"{', '.join(LABEL_COLUMNS)} in the header).")
    split_column: str | None = setting(
        None, help="Column of the split (train, val, test, eval, ...) or of integer folds "
        f"(default: the first of {', '.join(SPLIT_COLUMNS)} in the header); "
        f"'{NO_SPLIT_COLUMN}': split by file-name hash even so.")
    label_separators: str = setting(
        DEFAULT_LABEL_SEPARATORS, help="Characters that separate the labels of one field "
        "(each one does); empty: one label per field.")
    multi_label: bool = setting(False, help="Multi-label data even if every clip has one "
                                "label (they are anyway when a clip has several).")
    clip_seconds: float | None = setting(
        None, help="Nominal clip duration in seconds, recorded in dataset.json and used to "
        "plan the shard sizes (default: the most common duration of the clips).")
    hash_split: splits.HashSplitOptions
    output: common.OutputOptions

    def __post_init__(self):
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise ValueError(f"--clip_seconds must be > 0, got {self.clip_seconds}")


def main(config):
    convert_csv(config.csv, audio_dir=config.audio_dir, path_column=config.path_column,
                label_column=config.label_column, split_column=config.split_column,
                label_separators=config.label_separators, multi_label=config.multi_label,
                clip_seconds=config.clip_seconds,
                validation_percent=config.hash_split.validation_percent,
                test_percent=config.hash_split.test_percent, **config.output.arguments())


if __name__ == "__main__":
    cli.run(main, CsvConversion)
