"""AudioSet segment lists + downloaded clips -> TFRecords, one split per segment list.

    python -m tfrecords_tools.audioset --input_dir=audioset --output_dir=data/audioset \
        [--audio_dir=audioset/audio] [--splits=balanced_train,unbalanced_train,eval]

`--input_dir` holds `class_labels_indices.csv` (index,mid,display_name) and
`<split>_segments.csv` for each split (three `#` comment lines, then
`YTID, start_seconds, end_seconds, "mid1,mid2,..."`). Writes `<split>-*.tfrecord` with
`clip_id` = YTID and the multi-hot label indices, the reports of `tfrecords_tools.common`
(`<split>-missing.txt` lists the YTIDs without an audio file: real downloads are ~80%
complete, so missing clips are reported, never fatal), a copy of
`class_labels_indices.csv`, and `dataset.json`: multi-label, 10 s clips, each split with
its role (`*train` -> `train`, `eval` -> `eval`); splits converted in separate runs
accumulate there.

Audio files are found anywhere under `--audio_dir` (default: `--input_dir`), in
sub-folders or not, by file name (extension: any of `audio_io.AUDIO_EXTENSIONS`: wav, flac,
mp3, ogg, opus, m4a, aac, mp4, webm, aif(f); M4A/AAC/WebM need ffmpeg on PATH). Accepted
names, with YTID the 11-character YouTube id (letters, digits, `-`, `_`; it may begin with
`-` and contain `_`):

    <YTID>.<ext>                 e.g. --PJHxphWEs.wav
    <YTID>_<start>.<ext>         e.g. --PJHxphWEs_30.flac, --PJHxphWEs_30.000.flac
    <YTID>_<start>_<end>.<ext>   e.g. --PJHxphWEs_30.000_40.000.m4a, --PJHxphWEs_30_40.mp3
    Y<YTID>...                   the same with a leading `Y` (PANNs' naming)

`start`/`end` are seconds written as integers or decimals; a file whose start/end differ
from the segment's (by more than 1 ms) belongs to another segment and is not used. When
several files match a segment, the preferred one lies in a folder named like the split,
then names the start time, then is lossless (wav, flac), then comes first by path. A file
longer than its segment by more than 1 s is taken as the whole recording and the segment
is cut out of it. Each real file is taken once (a symlink loop under `--audio_dir` is
reported, not followed). Segments none of whose MIDs is in the class list are skipped
(reason `no_known_labels`); unknown MIDs are counted in the summary (`unknown_mids`).
"""

import collections
import csv
import dataclasses
import os
import re

from keras_astpe import cli
from keras_astpe.cli import setting
from keras_astpe.data import audio_io, dataset_info
from tfrecords_tools import common

DEFAULT_SPLITS = ("balanced_train", "unbalanced_train", "eval")
CLASS_LABELS_FILE = dataset_info.CLASS_FILES["audioset"]
CLIP_SECONDS = dataset_info.NOMINAL_CLIP_SECONDS["audioset"]
_YTID_LENGTH = 11
_NAME = re.compile(r"(?P<ytid>[A-Za-z0-9_-]{11})"
                   r"(?:_(?P<start>\d+(?:\.\d*)?)(?:_(?P<end>\d+(?:\.\d*)?))?)?")
_TIME_TOLERANCE = 1e-3
_LOSSLESS = ("wav", "flac")


@dataclasses.dataclass(frozen=True)
class Segment:
    ytid: str
    start: float
    end: float
    mids: tuple


@dataclasses.dataclass(frozen=True)
class AudioFile:
    """A file whose name parsed as a clip of `ytid` (start/end None when not named)."""

    path: str
    ytid: str
    start: float | None
    end: float | None


def read_class_labels(path):
    """[(index, mid, display_name)] from `class_labels_indices.csv`; indices 0..N-1."""
    rows = []
    for line, row in common.read_csv(path, ("index", "mid", "display_name")):
        try:
            rows.append((int(row["index"]), row["mid"], row["display_name"]))
        except ValueError:
            raise common.ConversionError(
                f"{path}:{line}: bad class index {row['index']!r}") from None
    if [index for index, _, _ in rows] != list(range(len(rows))):
        raise common.ConversionError(f"{path}: indices must be 0..N-1 in order")
    mids = [mid for _, mid, _ in rows]
    if len(set(mids)) != len(mids):
        raise common.ConversionError(f"{path}: a MID is listed twice")
    return rows


def read_segments(path):
    """Segments of an AudioSet `*_segments.csv` (comment lines start with `#`)."""
    segments = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            row = next(csv.reader([line], skipinitialspace=True))
            if len(row) != 4:
                raise common.ConversionError(
                    f"{path}:{line_number}: expected `YTID, start, end, \"mids\"`, got {line!r}")
            ytid, start, end, mids = row
            try:
                start, end = float(start), float(end)
            except ValueError:
                raise common.ConversionError(
                    f"{path}:{line_number}: bad start/end in {line!r}") from None
            segments.append(Segment(ytid, start, end,
                                    tuple(mid.strip() for mid in mids.split(",") if mid.strip())))
    return segments


def split_role(split):
    """The role of an AudioSet split: `eval` for `eval`, else `train`."""
    return "eval" if split == "eval" else "train"


def parse_clip_name(file_name, known_ytids):
    """(ytid, start, end) for an audio file name of a known YTID, else None.

    Both readings, with and without a leading `Y`, are tried; at most one can match.
    """
    stem = file_name.rsplit(".", 1)[0]
    for candidate in (stem, stem[1:] if stem.startswith("Y") else None):
        if candidate is None:
            continue
        match = _NAME.fullmatch(candidate)
        if match and match["ytid"] in known_ytids:
            start, end = match["start"], match["end"]
            return (match["ytid"], float(start) if start else None,
                    float(end) if end else None)
    return None


def index_audio_files(audio_dir, known_ytids):
    """Maps YTID -> [AudioFile] for the audio files under `audio_dir` (recursively, each
    real file once).

    Returns (index, unrecognised) where `unrecognised` lists audio files whose name names
    no YTID of `known_ytids`. Files and folders reached again through a symlink (a loop, or
    a second link; see `common.walk_files`) are taken once, and printed.
    """
    index, unrecognised = collections.defaultdict(list), []
    files, repeats = common.walk_files(audio_dir, {})
    for path in files:
        name = os.path.basename(path)
        if not audio_io.is_audio_file(name):
            continue
        path = os.path.abspath(path)
        parsed = parse_clip_name(name, known_ytids)
        if parsed is None:
            unrecognised.append(path)
        else:
            index[parsed[0]].append(AudioFile(path, *parsed))
    if repeats:
        print(f"note: {len(repeats)} files or folders under {audio_dir} are reached again "
              f"through a symlink (a loop, or a second link) and taken once, e.g. "
              f"{repeats[0][0]} (the same as {repeats[0][1]})", flush=True)
    return index, unrecognised


def match_files(segment, candidates, split):
    """The files among `candidates` (same YTID) that hold `segment`, preferred first."""
    def same(named, wanted):
        return named is None or abs(named - wanted) <= _TIME_TOLERANCE

    def preference(candidate):
        in_split_folder = split in candidate.path.split(os.sep)[:-1]
        extension = candidate.path.rsplit(".", 1)[-1].lower()
        return (not in_split_folder, candidate.start is None, extension not in _LOSSLESS,
                candidate.path)

    return sorted((c for c in candidates if same(c.start, segment.start) and
                   same(c.end, segment.end)), key=preference)


def convert_audioset(input_dir, output_dir, *, audio_dir=None, splits=DEFAULT_SPLITS,
                     shard_mb=common.DEFAULT_SHARD_MB, num_workers=None, overwrite=False,
                     progress=True):
    """Converts the given splits; returns {split: summary}."""
    labels_path = os.path.join(input_dir, CLASS_LABELS_FILE)
    if not os.path.isfile(labels_path):
        raise common.ConversionError(f"{labels_path} not found")
    class_rows = read_class_labels(labels_path)
    mid_to_index = {mid: index for index, mid, _ in class_rows}
    class_names = [name for _, _, name in class_rows]

    segments_by_split = {}
    for split in splits:
        path = os.path.join(input_dir, f"{split}_segments.csv")
        if not os.path.isfile(path):
            raise common.ConversionError(
                f"{path} not found: choose the splits to convert with --splits")
        segments_by_split[split] = read_segments(path)
    known = {segment.ytid for segments in segments_by_split.values() for segment in segments}
    if any(len(ytid) != _YTID_LENGTH for ytid in known):
        print(f"warning: some YTIDs are not {_YTID_LENGTH} characters long; files of those "
              "clips cannot be matched by name", flush=True)
    audio_dir = audio_dir or input_dir
    if not os.path.isdir(audio_dir):
        raise common.ConversionError(f"audio folder {audio_dir} not found")
    files, unrecognised = index_audio_files(audio_dir, known)
    print(f"found {sum(map(len, files.values()))} audio files for {len(files)} of "
          f"{len(known)} YTIDs under {audio_dir}", flush=True)
    if unrecognised:
        print(f"note: {len(unrecognised)} audio files under {audio_dir} name no YTID of the "
              f"segment lists and are ignored, e.g. {unrecognised[0]}", flush=True)

    os.makedirs(output_dir, exist_ok=True)
    common.copy_file(labels_path, os.path.join(output_dir, CLASS_LABELS_FILE))
    dataset = common.DatasetDescription(
        name="audioset", kind="audioset", class_names=tuple(class_names), multi_label=True,
        clip_seconds=CLIP_SECONDS, command=common.command_line(
            "tfrecords_tools.audioset", input_dir=input_dir, output_dir=output_dir,
            audio_dir=audio_dir, splits=list(splits), shard_mb=shard_mb))
    summaries = {}
    for split, segments in segments_by_split.items():
        items, missing, skipped, unknown_mids = [], [], [], collections.Counter()
        seen, ambiguous, other_times = set(), 0, 0
        for segment in segments:
            candidates = files.get(segment.ytid, [])
            matching = match_files(segment, candidates, split)
            path = matching[0].path if matching else ""
            if segment.ytid in seen:
                skipped.append(common.Skipped(
                    path, segment.ytid, "duplicate_segment",
                    f"{segment.ytid} is listed more than once in {split}; kept the first"))
                continue
            seen.add(segment.ytid)
            labels = sorted({mid_to_index[mid] for mid in segment.mids if mid in mid_to_index})
            unknown_mids.update(mid for mid in segment.mids if mid not in mid_to_index)
            if not matching:
                missing.append(segment.ytid)
                other_times += bool(candidates)
                continue
            if not labels:
                skipped.append(common.Skipped(
                    path, segment.ytid, "no_known_labels",
                    f"none of the MIDs {list(segment.mids)} is in {CLASS_LABELS_FILE}"))
                continue
            ambiguous += len(matching) > 1
            items.append(common.WorkItem(
                path=path, clip_id=segment.ytid, labels=tuple(labels),
                expected_seconds=segment.end - segment.start,
                segment=(segment.start, segment.end)))
        if other_times:
            print(f"[{split}] {other_times} missing segments have files of their YTID whose "
                  "names give other start/end times", flush=True)
        if unknown_mids:
            print(f"[{split}] {sum(unknown_mids.values())} labels use {len(unknown_mids)} MIDs "
                  f"that are not in {CLASS_LABELS_FILE}: {sorted(unknown_mids)[:5]}...",
                  flush=True)
        summaries[split] = common.convert_split(
            items, output_dir=output_dir, split=split, role=split_role(split),
            dataset=dataset, shard_mb=shard_mb, num_workers=num_workers, missing=missing,
            skipped=skipped, overwrite=overwrite, progress=progress,
            extra_summary={"segments": len(segments),
                           "unknown_mids": dict(sorted(unknown_mids.items())),
                           "segments_with_several_files": ambiguous,
                           "missing_with_files_of_other_times": other_times})
    return summaries



@dataclasses.dataclass(frozen=True, kw_only=True)
class AudioSetConversion:
    """The flags of `python -m tfrecords_tools.audioset`."""

    input_dir: str = setting(help="Folder holding class_labels_indices.csv and the "
                             "<split>_segments.csv lists.", required=True)
    audio_dir: str | None = setting(None, help="Folder searched recursively for the "
                                    "downloaded clips, named <YTID>[_<start>[_<end>]].<ext> "
                                    "(default: --input_dir).")
    splits: tuple[str, ...] = setting(DEFAULT_SPLITS, help="Splits to convert; each needs "
                                      "<split>_segments.csv in --input_dir and becomes "
                                      "<split>-*.tfrecord.")
    output: common.OutputOptions


def main(config):
    convert_audioset(config.input_dir, audio_dir=config.audio_dir, splits=config.splits,
                     **config.output.arguments())


if __name__ == "__main__":
    cli.run(main, AudioSetConversion)
