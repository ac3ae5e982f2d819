"""Small datasets of your own sounds, as a user has them, for the tests of training on them:
a folder per class (with or without Speech Commands' list files) and a CSV of clips and
labels (single- or multi-label). Three sound classes a tiny model tells apart in steps."""

import os

import numpy as np
import soundfile as sf

CLASSES = ("hum", "noise", "whistle")
RATE = 16000


def sound(name, seconds, rng):
    """One clip of class `name`: a 200 Hz hum, a burst of noise or a 3 kHz whistle."""
    t = np.arange(int(seconds * RATE)) / RATE
    if name == "hum":
        clip = 0.5 * np.sin(2 * np.pi * rng.uniform(180, 220) * t)
    elif name == "noise":
        clip = 0.3 * rng.standard_normal(len(t)) * np.exp(-3 * t)
    else:
        clip = 0.4 * np.sin(2 * np.pi * rng.uniform(2800, 3200) * t)
    return (clip + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_class_folders(root, per_class=10, seconds=0.5, lists=False, seed=0):
    """`root/<class>/<source>_nohash_0.wav`; with `lists`, Speech Commands'
    `validation_list.txt` and `testing_list.txt` naming every fifth clip of each class.
    Returns the clip ids (`<class>/<file>`)."""
    rng = np.random.default_rng(seed)
    ids = []
    for name in CLASSES:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in range(per_class):
            clip_id = f"{name}/{name[0]}{index:03d}x{seed}_nohash_0.wav"
            sf.write(os.path.join(root, clip_id), sound(name, seconds, rng), RATE)
            ids.append(clip_id)
    if lists:
        for offset, file_name in ((0, "validation_list.txt"), (1, "testing_list.txt")):
            with open(os.path.join(root, file_name), "w") as f:
                f.writelines(f"{clip_id}\n" for clip_id in ids[offset::5])
    return ids


def write_csv_dataset(root, clips=30, seconds=0.5, multi_label=False, seed=0):
    """`root/labels.csv` (filename, labels, split: 2/3 train, then validation and test in
    turn) and `root/clips/*.wav`; multi-label clips mix one to three classes. Returns the
    CSV's path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "clips"), exist_ok=True)
    rows = ["filename,labels,split"]
    for index in range(clips):
        labels = [CLASSES[index % len(CLASSES)]]
        if multi_label and index % 2:
            labels.append(CLASSES[(index + 1 + index // 6) % len(CLASSES)])
        labels = sorted(set(labels))
        mix = sum(sound(name, seconds, rng) for name in labels) / len(labels)
        name = f"clip{index:03d}.wav"
        sf.write(os.path.join(root, "clips", name), mix, RATE)
        split = ("train", "train", "validation", "train", "train", "test")[index % 6]
        rows.append(f'{name},"{",".join(labels)}",{split}')
    path = os.path.join(root, "labels.csv")
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return path
