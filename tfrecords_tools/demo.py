"""Synthesizes small AudioSet-format, ESC-50-format and class-folder datasets (seconds, no
download).

    python -m tfrecords_tools.demo --output_dir=demo_data [--seed=0] [--size=small]

`prepare_demo_data` (what the recipes call without `--data_dir`) also converts them to
TFRecords, once.

Writes, under `--output_dir`:

- `audioset/`: `class_labels_indices.csv` (10 real AudioSet rows, re-indexed 0..9),
  `balanced_train_segments.csv`, `unbalanced_train_segments.csv`, `eval_segments.csv` in
  the real format (three `#` comment lines, `YTID, start, end, "mid1,mid2"`), and
  `audio/<split>/...`: 10 s clips named by YTID with every naming rule that
  `tfrecords_tools.audioset` accepts, in WAV/FLAC/OGG, mono or stereo, at 16, 22.05 or
  44.1 kHz. Each clip mixes 1-3 events over background noise (multi-label). About 5% of
  the segment rows have no audio file, like real, incomplete downloads.
- `esc50/`: `meta/esc50.csv` (all ESC-50 columns) and `audio/*.wav`: 5 s, 44.1 kHz mono,
  one event per clip, 5 folds.
- `sounds/` (`generate_sounds_demo`): a folder per class, as `tfrecords_tools.folder` reads
  it (Speech Commands' layout, without list files): five of the classes below, 1 s clips
  named `<source>_nohash_<take>.<ext>` (one or two takes of one source, which the
  file-name hash keeps in one split) in WAV/FLAC/OGG, mono or stereo, at 16, 22.05 or 44.1
  kHz, and a `_background_noise_/` folder of long noise, which is not a class.

Each class is one synthesized event family (pure tone, chirps, high or low noise band,
clicks, buzz, siren, beeps, amplitude-modulated throb, bell) with random onset, duration,
gain and pitch, over random pink noise, so the classes are learnable but not trivial.
Generation is deterministic for a seed and idempotent: a complete output (marker file
`.demo-complete.json`) of the same seed and size is left as it is.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil

import numpy as np
import soundfile as sf

from keras_astpe import cli
from keras_astpe.cli import setting
from keras_astpe.io_utils import atomic_write_text

# Sizes: clips with audio per AudioSet split, rows without audio per split, ESC-50 clips
# per class. `small` keeps convert + train + evaluate of the recipe within minutes on CPU.
SIZES = {
    "tiny": {"balanced_train": 12, "unbalanced_train": 12, "eval": 10, "missing": 2,
             "esc50_per_class": 5},
    "small": {"balanced_train": 200, "unbalanced_train": 200, "eval": 100, "missing": 10,
              "esc50_per_class": 20},
}
# Clips per class of the class-folder demo, by size.
SOUNDS_PER_CLASS = {"tiny": 10, "small": 80}
SOUNDS_SECONDS = 1.0
# Its classes: ESC-50 style categories of `CLASSES`.
SOUNDS_CLASSES = ("beep", "bell", "buzz", "chirp", "siren")
AUDIOSET_SPLITS = ("balanced_train", "unbalanced_train", "eval")
AUDIOSET_SECONDS = 10.0
ESC50_SECONDS = 5.0
ESC50_RATE = 44100
ESC50_FOLDS = 5

# (index in the real AudioSet class list, mid, display_name, ESC-50 style category,
# synthesizer). The AudioSet rows are copied from class_labels_indices.csv.
CLASSES = (
    (501, "/m/01v_m0", "Sine wave", "sine_tone", "tone"),
    (503, "/m/0hdsk", "Chirp tone", "chirp", "chirp"),
    (84, "/m/07rjwbb", "Hiss", "hiss", "hiss"),
    (493, "/m/07phhsh", "Rumble", "rumble", "rumble"),
    (491, "/m/07qc9xj", "Clicking", "clicking", "clicks"),
    (130, "/m/07pjwq1", "Buzz", "buzz", "buzz"),
    (396, "/m/03kmc9", "Siren", "siren", "siren"),
    (481, "/m/02fs_r", "Beep, bleep", "beep", "beeps"),
    (522, "/m/07p_0gm", "Throbbing", "throbbing", "throb"),
    (200, "/m/0395lw", "Bell", "bell", "bell"),
)
# Later classes are rarer (weights 1 .. ~0.3), as in AudioSet's long tail.
_CLASS_WEIGHTS = 1.0 / (1.0 + 0.25 * np.arange(len(CLASSES)))
_EVENTS_PER_CLIP = ((1, 0.5), (2, 0.35), (3, 0.15))
_RATES = (16000, 22050, 44100)
# Vorbis encoding is the slow part of generation: one clip in four is OGG.
_FORMATS = (("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
            ("wav", "WAV", "PCM_16"))
_YTID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_MARKER = ".demo-complete.json"
_SOUNDS_MARKER = ".sounds-demo-complete.json"
_IN_PROGRESS = ".demo-in-progress.json"
_FORMAT_VERSION = 1
DEMO_DIR = "demo_data"
_CONVERTED_MARKER = ".converted.json"


def _envelope(n, sr, attack=0.01, release=0.02):
    """Linear fade in/out, so events start and stop without a click."""
    env = np.ones(n)
    a, r = min(n // 2, int(attack * sr)), min(n // 2, int(release * sr))
    if a:
        env[:a] = np.linspace(0.0, 1.0, a)
    if r:
        env[-r:] = np.linspace(1.0, 0.0, r)
    return env


def _shaped_noise(rng, n, sr, gain):
    """White noise shaped in frequency by `gain(freqs)`; FFT at a power of 2 for speed."""
    size = 1 << max(n - 1, 1).bit_length()
    spectrum = np.fft.rfft(rng.standard_normal(size))
    return np.fft.irfft(spectrum * gain(np.fft.rfftfreq(size, 1.0 / sr)), size)[:n]


def _band_noise(rng, n, sr, low, high):
    return _shaped_noise(rng, n, sr, lambda f: (f >= low) & (f <= min(high, 0.45 * sr)))


def _tone(rng, n, sr):
    t = np.arange(n) / sr
    f = rng.uniform(300, 1500) * (1 + 0.002 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    return np.sin(2 * np.pi * np.cumsum(f) / sr)


def _chirp(rng, n, sr):
    out = np.zeros(n)
    sweep = int(rng.uniform(0.25, 0.8) * sr)
    f0, f1 = sorted(rng.uniform(400, 3500, size=2))
    if rng.random() < 0.5:
        f0, f1 = f1, f0
    f = f0 * (f1 / f0) ** (np.arange(sweep) / sweep)
    one = np.sin(2 * np.pi * np.cumsum(f) / sr) * _envelope(sweep, sr)
    step = sweep + int(rng.uniform(0.05, 0.4) * sr)
    for start in range(0, n - sweep + 1, step):
        out[start:start + sweep] = one
    return out


def _hiss(rng, n, sr):
    return _band_noise(rng, n, sr, rng.uniform(3000, 4000), rng.uniform(6000, 7500))


def _rumble(rng, n, sr):
    return _band_noise(rng, n, sr, rng.uniform(30, 50), rng.uniform(150, 300))


def _clicks(rng, n, sr):
    out = np.zeros(n)
    period = sr / rng.uniform(3, 15)
    width = max(8, int(0.003 * sr))
    click = rng.standard_normal(width) * np.exp(-np.arange(width) / (width / 4))
    for position in np.arange(rng.uniform(0, period), n - width, period):
        jitter = int(rng.normal(0, 0.05 * period))
        start = int(np.clip(position + jitter, 0, n - width))
        out[start:start + width] += click
    return out


def _harmonics(rng, n, sr, f0, count, decay):
    t = np.arange(n) / sr
    phase = 2 * np.pi * f0 * t
    return sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** decay
               for k in range(1, count + 1) if k * f0 < 0.45 * sr)


def _buzz(rng, n, sr):
    return _harmonics(rng, n, sr, rng.uniform(90, 220), 16, 1.0)


def _siren(rng, n, sr):
    t = np.arange(n) / sr
    f = rng.uniform(700, 1200) + rng.uniform(200, 500) * np.sin(
        2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 2 * np.pi))
    return np.sin(2 * np.pi * np.cumsum(f) / sr)


def _beeps(rng, n, sr):
    on, period = int(rng.uniform(0.08, 0.25) * sr), rng.uniform(0.3, 0.6) * sr
    t = np.arange(on) / sr
    beep = np.sin(2 * np.pi * rng.uniform(1500, 3000) * t) * _envelope(on, sr, 0.005, 0.005)
    out = np.zeros(n)
    for start in np.arange(0, n - on, period).astype(int):
        out[start:start + on] = beep
    return out


def _throb(rng, n, sr):
    t = np.arange(n) / sr
    carrier = _harmonics(rng, n, sr, rng.uniform(150, 500), 3, 2.0)
    return carrier * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 8) * t))


def _bell(rng, n, sr):
    out = np.zeros(n)
    f0 = rng.uniform(300, 900)
    strikes = rng.integers(1, 4)
    for start in np.linspace(0, n, strikes, endpoint=False).astype(int):
        t = np.arange(n - start) / sr
        tail = rng.uniform(0.4, 1.5)
        out[start:] += sum(np.sin(2 * np.pi * ratio * f0 * t) * np.exp(-t * (1 + ratio) / tail)
                           / (1 + i) for i, ratio in enumerate((1.0, 2.76, 5.40, 8.93))
                           if ratio * f0 < 0.45 * sr)
    return out


_SYNTHESIZERS = {"tone": (_tone, 1.0, 5.0), "chirp": (_chirp, 0.8, 4.0), "hiss": (_hiss, 1.0, 5.0),
                 "rumble": (_rumble, 2.0, 6.0), "clicks": (_clicks, 1.0, 5.0),
                 "buzz": (_buzz, 1.0, 4.0), "siren": (_siren, 2.0, 6.0),
                 "beeps": (_beeps, 0.8, 3.0), "throb": (_throb, 2.0, 5.0),
                 "bell": (_bell, 1.0, 3.0)}


class _Background:
    """Pink noise backgrounds: random excerpts of one long noise per sample rate.

    Reusing one 64 s noise per rate (at random offsets and levels) instead of shaping new
    noise for every clip halves the generation time; the backgrounds still differ.
    """

    SECONDS = 64

    def __init__(self, rng):
        self._rng = rng
        self._noise = {}

    def excerpt(self, n, sr):
        if sr not in self._noise:
            noise = _shaped_noise(self._rng, self.SECONDS * sr, sr,
                                  lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))
            self._noise[sr] = noise / np.std(noise)
        noise = self._noise[sr]
        start = int(self._rng.integers(0, len(noise)))
        return np.take(noise, np.arange(start, start + n), mode="wrap")


def synthesize_clip(rng, class_ids, seconds, sr, channels=1, background=None):
    """One clip, float32 (frames, channels): the classes' events over pink noise."""
    background = background or _Background(rng)
    n = int(round(seconds * sr))
    clip = np.stack([background.excerpt(n, sr) * 10 ** (rng.uniform(-45, -30) / 20)
                     for _ in range(channels)], axis=1)
    for class_id in class_ids:
        synthesize, shortest, longest = _SYNTHESIZERS[CLASSES[class_id][4]]
        length = int(min(rng.uniform(shortest, longest), seconds) * sr)
        onset = int(rng.integers(0, n - length + 1))
        event = synthesize(rng, length, sr) * _envelope(length, sr)
        event *= 10 ** (rng.uniform(-26, -10) / 20) / (np.std(event) + 1e-12)
        pan = rng.uniform(0.6, 1.0, size=channels) if channels > 1 else np.ones(1)
        clip[onset:onset + length] += event[:, None] * pan[None, :]
    peak = np.max(np.abs(clip))
    if peak > 0.99:
        clip *= 0.99 / peak
    return clip.astype(np.float32)


def _draw_classes(rng, index):
    """1-3 distinct classes; the first cycles through all classes so each split has each."""
    count = int(rng.choice([c for c, _ in _EVENTS_PER_CLIP], p=[p for _, p in _EVENTS_PER_CLIP]))
    first = index % len(CLASSES) if index < 3 * len(CLASSES) else None
    weights = _CLASS_WEIGHTS.copy()
    chosen = []
    if first is not None:
        chosen.append(first)
        weights[first] = 0.0
    while len(chosen) < count:
        pick = int(rng.choice(len(CLASSES), p=weights / weights.sum()))
        chosen.append(pick)
        weights[pick] = 0.0
    return sorted(chosen)


def _ytids(rng, count):
    """Distinct random 11-character YouTube-like ids, some starting with `-`."""
    ids = {}
    while len(ids) < count:
        chars = rng.choice(list(_YTID_ALPHABET), size=11)
        if rng.random() < 0.15:
            chars[0] = "-"
        ids["".join(chars)] = None
    return list(ids)


def _file_name(ytid, start, end, rule, extension):
    """The naming rules of `tfrecords_tools.audioset`, in turn (`rule` modulo 5)."""
    return (f"{ytid}.{extension}", f"{ytid}_{int(start)}.{extension}",
            f"{ytid}_{start:.3f}.{extension}", f"{ytid}_{start:.3f}_{end:.3f}.{extension}",
            f"Y{ytid}.{extension}")[rule % 5]


def _write_audioset(root, rng, size, background):
    audio_root = os.path.join(root, "audio")
    os.makedirs(audio_root, exist_ok=True)
    with open(os.path.join(root, "class_labels_indices.csv"), "w", encoding="utf-8") as f:
        f.write("index,mid,display_name\n")
        f.writelines(f'{index},{mid},"{name}"\n' for index, (_, mid, name, _, _) in
                     enumerate(CLASSES))
    total = sum(size[split] + size["missing"] for split in AUDIOSET_SPLITS)
    ytids = iter(_ytids(rng, total))
    for split in AUDIOSET_SPLITS:
        rows = []
        folder = os.path.join(audio_root, split)
        os.makedirs(folder, exist_ok=True)
        for i in range(size[split] + size["missing"]):
            ytid = next(ytids)
            start = float(rng.integers(0, 30) * 10)
            end = start + AUDIOSET_SECONDS
            class_ids = _draw_classes(rng, i)
            mids = ",".join(CLASSES[c][1] for c in class_ids)
            rows.append(f'{ytid}, {start:.3f}, {end:.3f}, "{mids}"\n')
            if i >= size[split]:
                continue  # a segment whose download failed: no audio file
            sr = int(rng.choice(_RATES))
            channels = 2 if rng.random() < 0.25 else 1
            extension, file_format, subtype = _FORMATS[i % len(_FORMATS)]
            clip = synthesize_clip(rng, class_ids, AUDIOSET_SECONDS, sr, channels, background)
            name = _file_name(ytid, start, end, i, extension)
            sf.write(os.path.join(folder, name), clip, sr, format=file_format, subtype=subtype)
        order = rng.permutation(len(rows))
        with open(os.path.join(root, f"{split}_segments.csv"), "w", encoding="utf-8") as f:
            f.write("# Segments csv created by tfrecords_tools.demo (synthetic audio)\n"
                    f"# num_ytids={len(rows)}, num_segs={len(rows)}, "
                    f"num_unique_labels={len(CLASSES)}, num_positive_labels="
                    f"{sum(row.count('/m/') for row in rows)}\n"
                    "# YTID, start_seconds, end_seconds, positive_labels\n")
            f.writelines(rows[i] for i in order)


def _write_esc50(root, rng, per_class, background):
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    rows = []
    sources = rng.choice(np.arange(10000, 300000), size=len(CLASSES) * per_class, replace=False)
    for target, (_, _, _, category, _) in enumerate(CLASSES):
        for k in range(per_class):
            fold = k % ESC50_FOLDS + 1
            source = int(sources[target * per_class + k])
            take = "AB"[int(rng.integers(0, 2))]
            filename = f"{fold}-{source}-{take}-{target}.wav"
            clip = synthesize_clip(rng, [target], ESC50_SECONDS, ESC50_RATE, 1, background)
            sf.write(os.path.join(root, "audio", filename), clip[:, 0], ESC50_RATE,
                     subtype="PCM_16")
            rows.append((filename, fold, target, category, target < len(CLASSES) // 2,
                         source, take))
    rows.sort()
    with open(os.path.join(root, "meta", "esc50.csv"), "w", encoding="utf-8") as f:
        f.write("filename,fold,target,category,esc10,src_file,take\n")
        f.writelines(",".join(map(str, row)) + "\n" for row in rows)


def _write_sounds(root, rng, per_class, background):
    """`root/<class>/<source>_nohash_<take>.<ext>` and `root/_background_noise_/`."""
    categories = [category for _, _, _, category, _ in CLASSES]
    index = 0
    for name in SOUNDS_CLASSES:
        class_id = categories.index(name)
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        written = 0
        while written < per_class:
            source = "".join(rng.choice(list("0123456789abcdef"), size=8))
            for take in range(min(int(rng.integers(1, 3)), per_class - written)):
                sr = int(rng.choice(_RATES))
                channels = 2 if rng.random() < 0.2 else 1
                extension, file_format, subtype = _FORMATS[index % len(_FORMATS)]
                clip = synthesize_clip(rng, [class_id], SOUNDS_SECONDS, sr, channels,
                                       background)
                sf.write(os.path.join(folder, f"{source}_nohash_{take}.{extension}"), clip, sr,
                         format=file_format, subtype=subtype)
                written += 1
                index += 1
    noise = os.path.join(root, "_background_noise_")
    os.makedirs(noise, exist_ok=True)
    sf.write(os.path.join(noise, "pink_noise.wav"),
             0.1 * background.excerpt(int(10 * ESC50_RATE), ESC50_RATE), ESC50_RATE,
             subtype="PCM_16")


def demo_paths(output_dir):
    """The paths `generate_demo` returns, without generating anything."""
    audioset, esc50 = os.path.join(output_dir, "audioset"), os.path.join(output_dir, "esc50")
    return {
        "root": output_dir,
        "audioset": audioset,
        "audioset_audio": os.path.join(audioset, "audio"),
        "audioset_class_labels": os.path.join(audioset, "class_labels_indices.csv"),
        **{f"audioset_{split}_segments": os.path.join(audioset, f"{split}_segments.csv")
           for split in AUDIOSET_SPLITS},
        "esc50": esc50,
        "esc50_meta": os.path.join(esc50, "meta", "esc50.csv"),
        "esc50_audio": os.path.join(esc50, "audio"),
        "sounds": os.path.join(output_dir, "sounds"),
    }


def generate_demo(output_dir, seed=0, size="small"):
    """Writes both demo datasets under `output_dir` (unless already complete); returns paths.

    Folders `audioset/` and `esc50/` already in `output_dir` that this function did not
    make are never overwritten: that is an error.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    paths = demo_paths(output_dir)
    settings = {"version": _FORMAT_VERSION, "seed": int(seed), "size": size}
    marker, in_progress = (os.path.join(output_dir, name) for name in (_MARKER, _IN_PROGRESS))
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            if json.load(f) == settings:
                return paths
        os.remove(marker)
        open(in_progress, "w").close()
    if os.path.exists(in_progress):
        for folder in (paths["audioset"], paths["esc50"]):
            shutil.rmtree(folder, ignore_errors=True)
    taken = [folder for folder in (paths["audioset"], paths["esc50"]) if os.path.exists(folder)]
    if taken:
        raise FileExistsError(f"{taken} exist and were not made by tfrecords_tools.demo: "
                              "choose another output_dir")
    os.makedirs(output_dir, exist_ok=True)
    open(in_progress, "w").close()
    rng = np.random.default_rng(seed)
    background = _Background(rng)
    _write_audioset(paths["audioset"], rng, SIZES[size], background)
    _write_esc50(paths["esc50"], rng, SIZES[size]["esc50_per_class"], background)
    atomic_write_text(marker, json.dumps(settings))
    os.remove(in_progress)
    return paths


def generate_sounds_demo(output_dir, seed=0, size="small"):
    """Writes the class-folder demo in `output_dir/sounds` (unless already complete); returns
    the paths of `demo_paths`. A `sounds/` folder this function did not make is an error."""
    if size not in SOUNDS_PER_CLASS:
        raise ValueError(f"size must be one of {sorted(SOUNDS_PER_CLASS)}, got {size!r}")
    paths = demo_paths(output_dir)
    settings = {"version": _FORMAT_VERSION, "seed": int(seed), "size": size}
    marker = os.path.join(output_dir, _SOUNDS_MARKER)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            if json.load(f) == settings:
                return paths
        os.remove(marker)
        shutil.rmtree(paths["sounds"], ignore_errors=True)
    in_progress = marker + ".in-progress"
    if os.path.exists(in_progress):
        shutil.rmtree(paths["sounds"], ignore_errors=True)
    if os.path.exists(paths["sounds"]):
        raise FileExistsError(f"{paths['sounds']} exists and was not made by "
                              "tfrecords_tools.demo: choose another output_dir")
    os.makedirs(output_dir, exist_ok=True)
    open(in_progress, "w").close()
    rng = np.random.default_rng([int(seed), 1])
    _write_sounds(paths["sounds"], rng, SOUNDS_PER_CLASS[size], _Background(rng))
    atomic_write_text(marker, json.dumps(settings))
    os.remove(in_progress)
    return paths


def prepare_demo_data(dataset, root=DEMO_DIR, *, size="small", progress=True):
    """Generates the demo data under `root` (once) and converts `dataset` to TFRecords.

    The audio and the TFRecords of `<root>/tfrecords/<dataset>` are made on first use and
    reused afterwards; a different `size` regenerates both. Recipes started together share
    `root` safely (a file lock).

    Args:
        dataset: `"audioset"`, `"esc50"` or `"sounds"` (the class-folder demo, split by the
            file-name hash into train, validation and test).
        root: folder of the demo data.
        size: `"small"` (the recipes' demo) or `"tiny"` (smoke tests).
        progress: show progress bars.

    Returns:
        The folder holding the TFRecords of `dataset`, as `--data_dir` expects it.
    """
    if dataset not in ("audioset", "esc50", "sounds"):
        raise ValueError(f"dataset must be 'audioset', 'esc50' or 'sounds', got {dataset!r}")
    output_dir = os.path.join(root, "tfrecords", dataset)
    marker = os.path.join(output_dir, _CONVERTED_MARKER)
    generated = {"seed": 0, "size": size}
    os.makedirs(root, exist_ok=True)
    with _file_lock(os.path.join(root, ".lock")):
        generate = generate_sounds_demo if dataset == "sounds" else generate_demo
        paths = generate(root, seed=0, size=size)
        if os.path.exists(marker):
            with open(marker, encoding="utf-8") as f:
                if json.load(f) == generated:
                    return output_dir
        print(f"Converting the demo {dataset} data to TFRecords in {output_dir}", flush=True)
        if dataset == "audioset":
            from tfrecords_tools.audioset import convert_audioset

            convert_audioset(paths["audioset"], output_dir, overwrite=True, progress=progress)
        elif dataset == "sounds":
            from tfrecords_tools.folder import convert_folder

            convert_folder(paths["sounds"], output_dir, overwrite=True, progress=progress)
        else:
            from tfrecords_tools.esc50 import convert_esc50

            convert_esc50(paths["esc50"], output_dir, overwrite=True, progress=progress)
        atomic_write_text(marker, json.dumps(generated))
    return output_dir


def with_demo_data(config, dataset):
    """`config` itself when its `data_dir` is set, else a copy whose `data_dir` is the demo
    `dataset` prepared at `config.demo_size` (what the recipes do without --data_dir)."""
    if config.data_dir is not None:
        return config
    return dataclasses.replace(
        config, data_dir=prepare_demo_data(dataset, size=config.demo_size))


@contextlib.contextmanager
def _file_lock(path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)



@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The flags of `python -m tfrecords_tools.demo`."""

    output_dir: str = setting(DEMO_DIR, help="Folder for audioset/, esc50/ and sounds/.")
    seed: int = setting(0, help="Random seed; the same seed gives the same files.")
    size: str = setting("small", choices=tuple(SIZES), help="small: 400 train + 100 eval "
                        "AudioSet clips, 20 ESC-50 clips per class, 80 class-folder clips per "
                        "class; tiny: a few clips per split and class, for tests.")


def main(config):
    paths = generate_demo(config.output_dir, seed=config.seed, size=config.size)
    generate_sounds_demo(config.output_dir, seed=config.seed, size=config.size)
    print(f"demo AudioSet: {paths['audioset']}\ndemo ESC-50: {paths['esc50']}\n"
          f"demo class folders: {paths['sounds']}")


if __name__ == "__main__":
    cli.run(main, DemoConfig)
