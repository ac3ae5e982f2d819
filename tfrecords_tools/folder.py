"""A folder per class (Speech Commands v2 layout) -> TFRecords splits train/validation/test.

    python -m tfrecords_tools.folder --input_dir=speech_commands_v0.02 --output_dir=data/sc

Classes are the sub-folders of `--input_dir` in sorted order (index = position), except
those whose name starts with `_` or `.` (Speech Commands' `_background_noise_` holds long
noise recordings, not examples); a class folder without any audio file is an error. Every
audio file under a class folder is a clip of that class; `clip_id` is its path relative to
`--input_dir` with `/` separators, the form used by `validation_list.txt` and
`testing_list.txt`.

Splits: with either list file, the clips listed there form the `validation` and `test`
splits, all others `train`; a list file that does not exist means that split is not
written, and listed clips without a file are reported in `<split>-missing.txt`. Without
both list files, every clip goes to the split that `tfrecords_tools.splits.which_split`
gives it (Speech Commands' rule: a stable hash of the file name without anything from
`_nohash_` on; `--validation_percent`, `--test_percent`, 10 and 10 by default), so a rerun
or a grown folder keeps each clip in its split; the three splits are written even if one
is empty (a warning says so). The split sizes are printed and recorded in `dataset.json`;
classes that only one split has clips of are named in a warning.

Also writes `classes.csv` (index, category) and `dataset.json`: single-label, the splits
with their roles (`train`, `validation`, `test`), and the nominal clip length:
`--clip_seconds` when given, else the most common clip duration (to 0.1 s).

Symlinks are followed, each real file and folder once: a file reached again (a second link
to it, possibly from another class) is not a second clip but skipped, reported in
`train-skipped.csv` (reason `same_file`), and a folder reached again (a symlink loop) is
not walked again; both are printed and counted in the summaries (`symlink_repeats`).
"""

import dataclasses
import os

from tqdm import tqdm

from keras_astpe import cli
from keras_astpe.cli import setting
from keras_astpe.data import audio_io
from tfrecords_tools import common, splits

LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
# Sizes the shards when --clip_seconds is not given (Speech Commands' clips last 1 s).
PLANNING_CLIP_SECONDS = 1.0


def find_classes(input_dir):
    """Sorted class folder names (names starting with `_` or `.` are not classes)."""
    names = sorted(entry.name for entry in os.scandir(input_dir)
                   if entry.is_dir() and not entry.name.startswith(("_", ".")))
    if not names:
        raise common.ConversionError(f"{input_dir} has no class sub-folders")
    return names


def read_list(path):
    """Relative clip paths of a split list file (one per line, `/` separators), deduplicated."""
    with open(path, encoding="utf-8-sig") as f:
        return list(dict.fromkeys(line.strip() for line in f if line.strip()))


def convert_folder(input_dir, output_dir, *, clip_seconds=None,
                   validation_percent=splits.DEFAULT_VALIDATION_PERCENT,
                   test_percent=splits.DEFAULT_TEST_PERCENT,
                   shard_mb=common.DEFAULT_SHARD_MB, num_workers=None, overwrite=False,
                   progress=True):
    """Converts a class-per-folder dataset; returns {split: summary}.

    `clip_seconds`: the nominal clip length for `dataset.json`, also used to plan the shard
    sizes; None derives it from the clips (the most common duration).
    `validation_percent`, `test_percent`: the hash split of a folder without list files.
    """
    if not os.path.isdir(input_dir):
        raise common.ConversionError(f"{input_dir} is not a folder")
    splits.check_percents(validation_percent, test_percent)
    classes = find_classes(input_dir)
    clips, same_file, repeated_folders = _find_clips(input_dir, classes, clip_seconds,
                                                     progress)
    repeats = [(_clip_id(path, input_dir), _clip_id(first, input_dir))
               for path, first in repeated_folders]
    if repeats:
        print(f"note: {len(repeats)} folders under {input_dir} are reached again through a "
              f"symlink (a loop, or a second link) and walked once: "
              + ", ".join(f"{path} -> {first}" for path, first in repeats[:3]), flush=True)
    if same_file:
        print(f"note: {len(same_file)} audio files are reached again through a symlink and "
              f"taken once (listed in train-skipped.csv), e.g. {same_file[0].clip_id}",
              flush=True)

    listed = {split: os.path.join(input_dir, file_name)
              for split, file_name in LIST_FILES.items()}
    flags = {}
    if any(os.path.isfile(path) for path in listed.values()):
        members = _split_by_lists(clips, listed, same_file)
        rule = {"rule": "lists", "files": sorted(os.path.basename(path) for split, path
                                                 in listed.items() if split in members)}
    else:
        print(f"note: no {' or '.join(LIST_FILES.values())} in {input_dir}: splitting by "
              "file-name hash", flush=True)
        by_hash = splits.split_by_hash(clips.values(), validation_percent, test_percent)
        splits.report_hash_split(by_hash, validation_percent, test_percent)
        members = {split: (items, [], same_file if split == "train" else [])
                   for split, items in by_hash.items()}
        flags = {"validation_percent": validation_percent, "test_percent": test_percent}
        rule = {"rule": "file-name hash", **flags}
    splits.warn_lonely_classes({split: [item.labels for item in items]
                                for split, (items, _, _) in members.items()}, classes)

    os.makedirs(output_dir, exist_ok=True)
    common.write_classes_csv(os.path.join(output_dir, "classes.csv"), classes)
    dataset = common.DatasetDescription(
        name=os.path.basename(os.path.abspath(input_dir)), kind="folder",
        class_names=tuple(classes), multi_label=False, clip_seconds=clip_seconds,
        command=common.command_line("tfrecords_tools.folder", input_dir=input_dir,
                                    output_dir=output_dir, clip_seconds=clip_seconds,
                                    **flags, shard_mb=shard_mb))
    extra = {"split_rule": rule,
             "symlink_repeats": {"folders": [list(pair) for pair in repeats],
                                 "files": len(same_file)}}
    return {split: common.convert_split(
        items, output_dir=output_dir, split=split, role=split, dataset=dataset,
        shard_mb=shard_mb, num_workers=num_workers, missing=missing, skipped=skipped,
        overwrite=overwrite, progress=progress, extra_summary=extra)
        for split, (items, missing, skipped) in members.items()}


def _find_clips(input_dir, classes, clip_seconds, progress):
    """`(clips, same_file, repeated_folders)`: {clip_id: WorkItem} of every audio file
    under the class folders, the `Skipped` files reached again through a symlink, and the
    `(path, first_path)` of folders reached again. A class folder without any audio file
    of its own is an error."""
    clips, same_file, seen, repeated_folders = {}, [], {}, []
    common.register_tree(input_dir, seen)  # a file belongs to the folder it really is in
    for label, name in enumerate(tqdm(classes, desc="finding clips", unit="class",
                                      disable=not progress, dynamic_ncols=True)):
        files, repeats = common.walk_files(os.path.join(input_dir, name), seen)
        for path, first in repeats:
            if os.path.isdir(path):
                repeated_folders.append((path, first))
            elif audio_io.is_audio_file(os.path.basename(path)):
                same_file.append(common.Skipped(
                    os.path.abspath(path), _clip_id(path, input_dir), "same_file",
                    f"the same file as {_clip_id(first, input_dir)} (reached through a "
                    "symlink): taken once"))
        found = 0
        for path in files:
            if audio_io.is_audio_file(os.path.basename(path)):
                clip_id = _clip_id(path, input_dir)
                clips[clip_id] = common.WorkItem(
                    path=os.path.abspath(path), clip_id=clip_id, labels=(label,),
                    expected_seconds=clip_seconds or PLANNING_CLIP_SECONDS)
                found += 1
        if not found:
            raise common.ConversionError(
                f"{os.path.join(input_dir, name)}: class folder without audio files "
                f"(extensions: {', '.join(sorted(audio_io.AUDIO_EXTENSIONS))}): add its "
                "clips, remove it, or start its name with '_' to leave it out")
    return clips, same_file, repeated_folders


def _split_by_lists(clips, listed, same_file):
    """{split: (items, missing clip ids, skipped)} from Speech Commands' list files: the
    clips listed form `validation` and `test` (a split whose list does not exist is not
    written), all others `train`."""
    ids = {}
    for split, path in listed.items():
        if os.path.isfile(path):
            ids[split] = read_list(path)
        else:
            print(f"note: no {os.path.basename(path)} in {os.path.dirname(path)}: no "
                  f"{split} split", flush=True)
    if "validation" in ids and "test" in ids:
        both = set(ids["validation"]) & set(ids["test"])
        if both:
            raise common.ConversionError(
                f"{len(both)} clips are in both {LIST_FILES['validation']} and "
                f"{LIST_FILES['test']}, e.g. {sorted(both)[0]}")
    assigned = {clip_id for split_ids in ids.values() for clip_id in split_ids}
    members = {"train": ([clips[c] for c in clips if c not in assigned], [], same_file)}
    for split, split_ids in ids.items():
        members[split] = ([clips[c] for c in split_ids if c in clips],
                          [c for c in split_ids if c not in clips], [])
    return members


def _clip_id(path, input_dir):
    """A clip's id: its path relative to `input_dir`, with `/` separators."""
    return os.path.relpath(path, input_dir).replace(os.sep, "/")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FolderConversion:
    """The flags of `python -m tfrecords_tools.folder`."""

    input_dir: str = setting(help="Folder with one sub-folder of audio files per class, and "
                             "optionally validation_list.txt and testing_list.txt.",
                             required=True)
    clip_seconds: float | None = setting(
        None, help="Nominal clip duration in seconds, recorded in dataset.json and used to "
        "plan the shard sizes (default: the most common duration of the clips).")
    hash_split: splits.HashSplitOptions
    output: common.OutputOptions

    def __post_init__(self):
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise ValueError(f"--clip_seconds must be > 0, got {self.clip_seconds}")


def main(config):
    convert_folder(config.input_dir, clip_seconds=config.clip_seconds,
                   validation_percent=config.hash_split.validation_percent,
                   test_percent=config.hash_split.test_percent, **config.output.arguments())


if __name__ == "__main__":
    cli.run(main, FolderConversion)
