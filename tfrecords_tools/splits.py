"""Stable train/validation/test splits for data without split lists, and the check that
every class can be both trained and tested.

`which_split` is Speech Commands' rule (`which_set` of TensorFlow's
`examples/speech_commands/input_data.py`, which made the dataset's own lists): the SHA-1 of
the clip's file name, without the folder and without anything from `_nohash_` on, taken
modulo 2**27 as a percentage, puts the clip in `validation` below `validation_percent`,
in `test` below `validation_percent + test_percent`, else in `train`. A clip's split
depends on its name and the two percentages only, so a rerun, or a folder that has grown,
keeps every clip where it was; and `<speaker>_nohash_<n>.wav` files of one speaker land in
one split, whatever class folder they are in.
"""

import dataclasses
import hashlib
import posixpath
import re

from keras_astpe.cli import setting

SPLITS = ("train", "validation", "test")
DEFAULT_VALIDATION_PERCENT = 10.0
DEFAULT_TEST_PERCENT = 10.0
# Speech Commands' MAX_NUM_WAVS_PER_CLASS: the hash is taken modulo this + 1.
_HASH_MODULUS = 2**27
_NOHASH = re.compile(r"_nohash_.*$")


def hash_name(clip_id):
    """The part of a clip's path that decides its split: the file name (after the last `/`)
    without anything from `_nohash_` on."""
    return _NOHASH.sub("", posixpath.basename(clip_id))


def hash_percent(clip_id):
    """Where the clip's `hash_name` falls in [0, 100] (Speech Commands' formula)."""
    digest = int(hashlib.sha1(hash_name(clip_id).encode("utf-8")).hexdigest(), 16)
    return (digest % _HASH_MODULUS) * (100.0 / (_HASH_MODULUS - 1))


def which_split(clip_id, validation_percent=DEFAULT_VALIDATION_PERCENT,
                test_percent=DEFAULT_TEST_PERCENT):
    """`train`, `validation` or `test` for the clip with path `clip_id` (`/` separators)."""
    percent = hash_percent(clip_id)
    if percent < validation_percent:
        return "validation"
    if percent < validation_percent + test_percent:
        return "test"
    return "train"


def check_percents(validation_percent, test_percent):
    """A `ValueError` naming the flag when the percentages leave no room for training."""
    for name, value in (("validation_percent", validation_percent),
                        ("test_percent", test_percent)):
        if not 0 <= value < 100:
            raise ValueError(f"--{name} must be in [0, 100), got {value:g}")
    if validation_percent + test_percent >= 100:
        raise ValueError(f"--validation_percent + --test_percent must be below 100, got "
                         f"{validation_percent:g} + {test_percent:g}")


def split_by_hash(items, validation_percent, test_percent):
    """{split: [items]} for the three `SPLITS`, by `which_split` of each item's `clip_id`."""
    check_percents(validation_percent, test_percent)
    members = {split: [] for split in SPLITS}
    for item in items:
        members[which_split(item.clip_id, validation_percent, test_percent)].append(item)
    return members


def report_hash_split(members, validation_percent, test_percent):
    """Prints the split sizes, and a warning for each split that no clip falls in although
    its percentage is not 0 (a dataset too small for it)."""
    sizes = ", ".join(f"{split} {len(items)}" for split, items in members.items())
    print(f"split by file-name hash (validation {validation_percent:g}%, test "
          f"{test_percent:g}%): {sizes} clips", flush=True)
    percents = {"train": 100 - validation_percent - test_percent,
                "validation": validation_percent, "test": test_percent}
    for split, items in members.items():
        if not items and percents[split] > 0:
            print(f"warning: no clip falls in the {split} split ({percents[split]:g}% of "
                  f"{sum(map(len, members.values()))} clips): it is written empty", flush=True)


def lonely_classes(labels_by_group, class_names):
    """{group: [class names]}: the classes that only `group` has a clip of, when at least
    two groups have clips, and under None the classes that no group has a clip of.

    `labels_by_group` maps each group (a split, or a fold) to the label indices of its
    clips, e.g. {"train": [(0,), (1, 2)], "test": [(0,)]}.
    """
    groups_of = [set() for _ in class_names]
    for group, label_lists in labels_by_group.items():
        for labels in label_lists:
            for label in labels:
                groups_of[label].add(group)
    filled = [group for group, label_lists in labels_by_group.items() if label_lists]
    lonely = {}
    for name, groups in zip(class_names, groups_of, strict=True):
        if not groups:
            lonely.setdefault(None, []).append(name)
        elif len(groups) == 1 and len(filled) > 1:
            lonely.setdefault(next(iter(groups)), []).append(name)
    return lonely


def warn_lonely_classes(labels_by_group, class_names, what="split"):
    """Prints a warning line for each group holding classes that no other group has (they
    cannot be both trained and tested), and one for classes without any clip; returns
    `lonely_classes`."""
    lonely = lonely_classes(labels_by_group, class_names)
    for group, names in lonely.items():
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more"
                                          if len(names) > 20 else "")
        if group is None:
            print(f"warning: {len(names)} classes have no clip: {listed}", flush=True)
        else:
            print(f"warning: {len(names)} classes have clips in {what} {group!r} only (no "
                  f"other {what} can train or test them): {listed}", flush=True)
    return lonely


@dataclasses.dataclass(frozen=True, kw_only=True)
class HashSplitOptions:
    """The flags of the file-name hash split (see `which_split`)."""

    validation_percent: float = setting(
        DEFAULT_VALIDATION_PERCENT, help="Percent of the clips (by a stable hash of the file "
        "name, without anything from '_nohash_' on) in the validation split, for data "
        "without split lists or column.")
    test_percent: float = setting(
        DEFAULT_TEST_PERCENT, help="Percent of the clips (by the same hash) in the test "
        "split, for data without split lists or column.")

    def __post_init__(self):
        check_percents(self.validation_percent, self.test_percent)
