"""A folder per class (Speech Commands v2 layout) -> TFRecords splits train/validation/test.

    python -m tfrecords_tools.folder --input_dir=speech_commands_v0.02 --output_dir=data/sc

Classes are the sub-folders of `--input_dir` in sorted order (index = position), except
those whose name starts with `_` or `.` (Speech Commands' `_background_noise_` holds long
noise recordings, not examples). Every audio file under a class folder is a clip of that
class; `clip_id` is its path relative to `--input_dir` with `/` separators, the form used by
`validation_list.txt` and `testing_list.txt`. The clips listed there form the `validation`
and `test` splits, all others `train`; a list file that does not exist means that split is
not written. Listed clips without a file are reported in `<split>-missing.txt`. Also writes
`classes.csv` (index, category).
"""

import os
import sys

from absl import app, flags

from tfrecords_tools import common

LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
DEFAULT_CLIP_SECONDS = 1.0


def find_classes(input_dir):
    """Sorted class folder names (names starting with `_` or `.` are not classes)."""
    names = sorted(entry.name for entry in os.scandir(input_dir)
                   if entry.is_dir() and not entry.name.startswith(("_", ".")))
    if not names:
        raise common.ConversionError(f"{input_dir} has no class sub-folders")
    return names


def read_list(path):
    """Relative clip paths of a split list file (one per line, `/` separators), deduplicated."""
    with open(path, encoding="utf-8") as f:
        return list(dict.fromkeys(line.strip() for line in f if line.strip()))


def convert_folder(input_dir, output_dir, *, clip_seconds=DEFAULT_CLIP_SECONDS,
                   shard_mb=common.DEFAULT_SHARD_MB, num_workers=None, overwrite=False,
                   progress=True):
    """Converts a class-per-folder dataset; returns {split: summary}."""
    if not os.path.isdir(input_dir):
        raise common.ConversionError(f"{input_dir} is not a folder")
    classes = find_classes(input_dir)
    clips = {}
    for label, name in enumerate(classes):
        class_dir = os.path.join(input_dir, name)
        for folder, subfolders, files in os.walk(class_dir, followlinks=True):
            subfolders.sort()
            for file_name in sorted(files):
                if common.is_audio_file(file_name):
                    path = os.path.join(folder, file_name)
                    clip_id = os.path.relpath(path, input_dir).replace(os.sep, "/")
                    clips[clip_id] = common.WorkItem(
                        path=os.path.abspath(path), clip_id=clip_id, labels=(label,),
                        expected_seconds=clip_seconds)

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
    members = {"train": ([clips[c] for c in clips if c not in assigned], [])}
    for split, ids in listed.items():
        members[split] = ([clips[c] for c in ids if c in clips],
                          [c for c in ids if c not in clips])

    os.makedirs(output_dir, exist_ok=True)
    common.write_classes_csv(os.path.join(output_dir, "classes.csv"), classes)
    return {split: common.convert_split(
        items, output_dir=output_dir, split=split, class_names=classes, shard_mb=shard_mb,
        num_workers=num_workers, missing=missing, overwrite=overwrite, progress=progress)
        for split, (items, missing) in members.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    try:
        convert_folder(FLAGS.input_dir, FLAGS.output_dir, clip_seconds=FLAGS.clip_seconds,
                       shard_mb=FLAGS.shard_mb, num_workers=FLAGS.num_workers,
                       overwrite=FLAGS.overwrite)
    except common.ConversionError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    flags.DEFINE_string("input_dir", None, "Folder with one sub-folder of audio files per "
                        "class, and optionally validation_list.txt and testing_list.txt.",
                        required=True)
    flags.DEFINE_float("clip_seconds", DEFAULT_CLIP_SECONDS, "Typical clip duration in "
                       "seconds, used only to plan the shard sizes (Speech Commands: 1).")
    common.define_common_flags()
    flags.adopt_module_key_flags(common)
    app.run(main)
