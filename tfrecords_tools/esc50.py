"""ESC-50 -> TFRecords: one split `esc50` holding all clips, each with its fold (1..5).

    python -m tfrecords_tools.esc50 --input_dir=ESC-50-master --output_dir=data/esc50

Reads `meta/esc50.csv` (filename, fold, target, category, esc10, src_file, take) and
`audio/<filename>` (44.1 kHz mono WAV, 5 s). Labels are the `target` column; the folds are
kept in the `fold` field, which the training pipeline filters on for the 5-fold
cross-validation, so one split serves every fold. Writes `esc50-*.tfrecord`, the reports of
`tfrecords_tools.common`, `classes.csv` (index, category) and `dataset.json`: single-label,
5 s clips, the split `esc50` of role `train` with folds 1-5 as cross-validation folds and
its clips per fold. Rows whose audio file does not exist are listed in `esc50-missing.txt`;
a row with too few or too many fields, or a fold other than 1-5, is an error naming the
line.
"""

import dataclasses
import os

from keras_astpe import cli
from keras_astpe.cli import setting
from keras_astpe.data import dataset_info
from tfrecords_tools import common

SPLIT = "esc50"
CLIP_SECONDS = dataset_info.NOMINAL_CLIP_SECONDS["esc50"]
FOLDS = dataset_info.ESC50_FOLDS
_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def read_metadata(csv_path):
    """Rows of `meta/esc50.csv` as dicts, with `fold` (1..5) and `target` as ints."""
    rows = []
    for line, row in common.read_csv(csv_path, _COLUMNS):
        try:
            row["fold"], row["target"] = int(row["fold"]), int(row["target"])
        except ValueError:
            raise common.ConversionError(
                f"{csv_path}:{line}: fold and target must be integers, got "
                f"{row['fold']!r}, {row['target']!r}") from None
        if row["fold"] not in FOLDS:
            raise common.ConversionError(
                f"{csv_path}:{line}: fold {row['fold']} of {row['filename']!r} is not one of "
                f"the ESC-50 folds {FOLDS[0]}-{FOLDS[-1]}")
        rows.append(row)
    return rows


def class_names(rows, csv_path="esc50.csv"):
    """Category names by target index; targets must be 0..N-1, one category each."""
    names = {}
    for row in rows:
        known = names.setdefault(row["target"], row["category"])
        if known != row["category"]:
            raise common.ConversionError(
                f"{csv_path}: target {row['target']} is both {known!r} and {row['category']!r}")
    if sorted(names) != list(range(len(names))):
        raise common.ConversionError(
            f"{csv_path}: targets must be 0..N-1, got {sorted(names)}")
    return [names[target] for target in range(len(names))]


def convert_esc50(input_dir, output_dir, *, shard_mb=common.DEFAULT_SHARD_MB, num_workers=None,
                  overwrite=False, progress=True):
    """Converts an ESC-50 checkout; returns the summary of split `esc50`."""
    csv_path = os.path.join(input_dir, "meta", "esc50.csv")
    if not os.path.isfile(csv_path):
        raise common.ConversionError(f"{csv_path} not found: --input_dir must be the ESC-50 "
                                     "folder holding meta/ and audio/")
    rows = read_metadata(csv_path)
    names = class_names(rows, csv_path)
    items, missing, seen = [], [], set()
    for row in rows:
        if row["filename"] in seen:
            raise common.ConversionError(f"{csv_path}: {row['filename']} is listed twice")
        seen.add(row["filename"])
        path = os.path.abspath(os.path.join(input_dir, "audio", row["filename"]))
        if not os.path.isfile(path):
            missing.append(row["filename"])
            continue
        items.append(common.WorkItem(path=path, clip_id=row["filename"],
                                     labels=(row["target"],), fold=row["fold"],
                                     expected_seconds=CLIP_SECONDS))
    os.makedirs(output_dir, exist_ok=True)
    common.write_classes_csv(os.path.join(output_dir, "classes.csv"), names)
    dataset = common.DatasetDescription(
        name="esc50", kind="esc50", class_names=tuple(names), multi_label=False,
        clip_seconds=CLIP_SECONDS, command=common.command_line(
            "tfrecords_tools.esc50", input_dir=input_dir, output_dir=output_dir,
            shard_mb=shard_mb))
    return common.convert_split(
        items, output_dir=output_dir, split=SPLIT, role="train", dataset=dataset,
        cross_validation_folds=FOLDS, shard_mb=shard_mb, num_workers=num_workers,
        missing=missing, overwrite=overwrite, progress=progress,
        extra_summary={"folds": sorted({row["fold"] for row in rows})})



@dataclasses.dataclass(frozen=True, kw_only=True)
class ESC50Conversion:
    """The flags of `python -m tfrecords_tools.esc50`."""

    input_dir: str = setting(help="ESC-50 folder (e.g. ESC-50-master) holding meta/esc50.csv "
                             "and audio/*.wav.", required=True)
    output: common.OutputOptions


def main(config):
    convert_esc50(config.input_dir, **config.output.arguments())


if __name__ == "__main__":
    cli.run(main, ESC50Conversion)
