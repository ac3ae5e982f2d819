"""A folder per class (Speech Commands v2 layout) -> TFRecords splits train/validation/test.

    python -m tfrecords_tools.folder --input_dir=speech_commands_v0.02 --output_dir=data/sc

Classes are the sub-folders of `--input_dir` in sorted order (index = position), except
those whose name starts with `_` or `.` (Speech Commands' `_background_noise_` holds long
noise recordings, not examples). Every audio file under a class folder is a clip of that
class; `clip_id` is its path relative to `--input_dir` with `/` separators, the form used by
`validation_list.txt` and `testing_list.txt`. The clips listed there form the `validation`
and `test` splits, all others `train`; a list file that does not exist means that split is
not written. Listed clips without a file are reported in `<split>-missing.txt`. Also writes
`classes.csv` (index, category) and `dataset.json`: single-label, the splits with their
roles (`train`, `validation`, `test`), and the nominal clip length: `--clip_seconds` when
given, else the most common clip duration (to 0.1 s).

Symlinks are followed, each real file and folder once: a file reached again (a second link
to it, possibly from another class) is not a second clip but skipped, reported in
`train-skipped.csv` (reason `same_file`), and a folder reached again (a symlink loop) is
not walked again; both are printed and counted in the summaries (`symlink_repeats`).
"""

import dataclasses
import os

from keras_astpe import cli
from keras_astpe.cli import setting
from tfrecords_tools import common

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
                   shard_mb=common.DEFAULT_SHARD_MB, num_workers=None, overwrite=False,
                   progress=True):
    """Converts a class-per-folder dataset; returns {split: summary}.

    `clip_seconds`: the nominal clip length for `dataset.json`, also used to plan the shard
    sizes; None derives it from the clips (the most common duration).
    """
    if not os.path.isdir(input_dir):
        raise common.ConversionError(f"{input_dir} is not a folder")
    classes = find_classes(input_dir)
    clips, same_file, seen, repeated_folders = {}, [], {}, []
    common.register_tree(input_dir, seen)  # a file belongs to the folder it really is in
    for label, name in enumerate(classes):
        files, repeats = common.walk_files(os.path.join(input_dir, name), seen)
        for path, first in repeats:
            if os.path.isdir(path):
                repeated_folders.append((path, first))
            elif common.is_audio_file(os.path.basename(path)):
                same_file.append(common.Skipped(
                    os.path.abspath(path), _clip_id(path, input_dir), "same_file",
                    f"the same file as {_clip_id(first, input_dir)} (reached through a "
                    "symlink): taken once"))
        for path in files:
            if common.is_audio_file(os.path.basename(path)):
                clip_id = _clip_id(path, input_dir)
                clips[clip_id] = common.WorkItem(
                    path=os.path.abspath(path), clip_id=clip_id, labels=(label,),
                    expected_seconds=clip_seconds or PLANNING_CLIP_SECONDS)
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

    listed = {}
    for split, file_name in LIST_FILES.items():
        path = os.path.join(input_dir, file_name)
        if os.path.isfile(path):
            listed[split] = read_list(path)
        else:
            print(f"note: no {file_name} in {input_dir}: no {split} split", flush=True)
    if "validation" in listed and "test" in listed:
        both = set(listed["validation"]) & set(listed["test"])
        if both:
            raise common.ConversionError(
                f"{len(both)} clips are in both {LIST_FILES['validation']} and "
                f"{LIST_FILES['test']}, e.g. {sorted(both)[0]}")
    assigned = {clip_id for ids in listed.values() for clip_id in ids}
    members = {"train": ([clips[c] for c in clips if c not in assigned], [], same_file)}
    for split, ids in listed.items():
        members[split] = ([clips[c] for c in ids if c in clips],
                          [c for c in ids if c not in clips], [])

    os.makedirs(output_dir, exist_ok=True)
    common.write_classes_csv(os.path.join(output_dir, "classes.csv"), classes)
    dataset = common.DatasetDescription(
        name=os.path.basename(os.path.abspath(input_dir)), kind="folder",
        class_names=tuple(classes), multi_label=False, clip_seconds=clip_seconds,
        command=common.command_line("tfrecords_tools.folder", input_dir=input_dir,
                                    output_dir=output_dir, clip_seconds=clip_seconds,
                                    shard_mb=shard_mb))
    extra = {"symlink_repeats": {"folders": [list(pair) for pair in repeats],
                                 "files": len(same_file)}}
    return {split: common.convert_split(
        items, output_dir=output_dir, split=split, role=split, dataset=dataset,
        shard_mb=shard_mb, num_workers=num_workers, missing=missing, skipped=skipped,
        overwrite=overwrite, progress=progress, extra_summary=extra)
        for split, (items, missing, skipped) in members.items()}


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
    output: common.OutputOptions

    def __post_init__(self):
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise ValueError(f"--clip_seconds must be > 0, got {self.clip_seconds}")


def main(config):
    convert_folder(config.input_dir, clip_seconds=config.clip_seconds,
                   **config.output.arguments())


if __name__ == "__main__":
    cli.run(main, FolderConversion)
