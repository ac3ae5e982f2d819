"""Scores audio files with a saved model: top classes, a results file, timelines.

    python recipes/predict.py --model=saved_models/audioset-demo/time_alibi/model.keras \\
        --audio=dog.wav
    python recipes/predict.py --model=model.keras --audio=recordings/ --top_k=3 \\
        --output=results.csv
    python recipes/predict.py --model=model.keras --audio=field_recording.flac --timeline

`--audio` is a file or a folder, walked recursively for audio files (the extensions the
TFRecord converters pick up). Any format and sample rate `keras_astpe.data.audio_io` reads
is decoded, mixed to mono and resampled as the converters do. A clip up to the model's
trained length is scored whole, a longer one as sliding windows of that length, their
scores averaged (`--window_seconds`, `--hop_seconds`, `--aggregation`, `--whole_clips`; see
`keras_astpe.inference.Windows`), so an hour-long file takes the memory of its waveform and
one batch of windows, with a progress bar on stderr.

Results go to stdout (the top `--top_k` classes of each file), or with `--output` to a
`.csv` (one row per file) or `.jsonl` (one JSON object per line) file, written as files are
scored; `--all_scores` puts every class's score there. `--timeline` writes, per file, the
scores of each window with its start and end time (`<timeline_dir>/<file>.csv`) and a plot
of the top classes over time (`.png`). A file that cannot be scored is reported on stderr
(and in `--output`, with its error) and counted, and the last line sums up; the exit code is
1 when no file could be scored.
"""

import csv
import dataclasses
import json
import os
import sys

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.inference import WindowSettings

OUTPUT_FORMATS = (".csv", ".jsonl")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictConfig:
    model: str = cli.setting(help="Saved model (.keras) that carries its front end.",
                             required=True)
    audio: str = cli.setting(help="Audio file, or folder searched recursively for audio "
                             "files.", required=True)
    top_k: int = cli.setting(5, help="Classes reported per file (and plotted in timelines).")
    output: str | None = cli.setting(
        None, help="Write the results to this .csv (one row per file) or .jsonl (one JSON "
        "object per line) file instead of stdout: each file's top_k classes, or every "
        "score with --all_scores, or the error that kept it from being scored.")
    all_scores: bool = cli.setting(False, help="With --output: every class's score.")
    timeline: bool = cli.setting(
        False, help="Write per file the scores of each window with its start and end "
        "(<timeline_dir>/<file>.csv) and a plot over time of the top_k classes by their "
        "highest window score (.png).")
    timeline_dir: str = cli.setting("timelines", help="Folder of the --timeline files.")
    progress: bool = cli.setting(True, help="A progress bar on stderr for files scored in "
                                 "more than one batch of windows.")
    windows: WindowSettings = dataclasses.field(default_factory=WindowSettings)

    def __post_init__(self):
        if not os.path.isfile(self.model):
            raise FileNotFoundError(f"--model={self.model}: model file not found")
        if not os.path.exists(self.audio):
            raise FileNotFoundError(f"--audio={self.audio}: no such file or folder")
        if self.top_k < 1:
            raise ValueError(f"--top_k must be >= 1, got {self.top_k}")
        if self.output is not None and not self.output.endswith(OUTPUT_FORMATS):
            raise ValueError(f"--output={self.output}: expected a file name ending with .csv "
                             f"or .jsonl")
        if self.all_scores and self.output is None:
            raise ValueError("--all_scores writes every score to --output: give --output too")


def audio_files(path):
    """`path` itself, or the audio files under the folder `path`, sorted."""
    from keras_astpe.data.audio_io import is_audio_file

    if os.path.isfile(path):
        return [path]
    found = []
    for folder, subfolders, names in os.walk(path):
        subfolders.sort()
        found.extend(os.path.join(folder, name) for name in sorted(names)
                     if is_audio_file(name))
    return found


class ResultsFile:
    """`--output`: one row (CSV) or JSON line per file, flushed as each file is done."""

    def __init__(self, path, class_names, top_k, all_scores):
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.file = open(path, "w", newline="", encoding="utf-8")
        self.class_names, self.top_k, self.all_scores = class_names, top_k, all_scores
        self.csv = None
        if path.endswith(".csv"):
            self.csv = csv.writer(self.file)
            scores = class_names if all_scores else [
                f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("class", "score")]
            self.header = ["file", "duration_s", "sample_rate", "windows", "error", *scores]
            self.csv.writerow(self.header)

    def scored(self, path, decoded, scored, top):
        if self.csv is not None:
            values = (scored.scores.tolist() if self.all_scores
                      else [value for name, score in top for value in (name, score)])
            self.csv.writerow([path, f"{decoded.duration_seconds:.3f}",
                               decoded.original_sample_rate, len(scored.starts), "",
                               *(f"{v:.6f}" if isinstance(v, float) else v for v in values)])
        else:
            record = {"file": path, "duration_s": round(decoded.duration_seconds, 3),
                      "sample_rate": decoded.original_sample_rate,
                      "windows": len(scored.starts)}
            if self.all_scores:
                record["scores"] = {name: round(float(score), 6)
                                    for name, score in zip(self.class_names, scored.scores,
                                                           strict=True)}
            else:
                record["top"] = [{"class": name, "score": round(score, 6)}
                                 for name, score in top]
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def skipped(self, path, error):
        if self.csv is not None:
            self.csv.writerow([path, "", "", "", str(error)]
                              + [""] * (len(self.header) - 5))
        else:
            self.file.write(json.dumps({"file": path, "error": str(error)}) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def timeline_path(config, path):
    """`<timeline_dir>/<path under --audio>` (`<timeline_dir>/<name>` for a single file)."""
    relative = (os.path.basename(path) if os.path.isfile(config.audio)
                else os.path.relpath(path, config.audio))
    return os.path.join(config.timeline_dir, relative)


def write_timeline(base, scored, class_names, top_k):
    """`<base>.csv`: start_s, end_s and every class's score per window; `<base>.png`: the
    `top_k` classes by their highest window score over time, at the windows' centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    starts = scored.starts / scored.sample_rate
    ends = scored.ends / scored.sample_rate
    with open(base + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["start_s", "end_s", *class_names])
        for start, end, scores in zip(starts, ends, scored.window_scores, strict=True):
            writer.writerow([f"{start:.3f}", f"{end:.3f}", *(f"{v:.6f}" for v in scores)])
    top = np.argsort(-scored.window_scores.max(axis=0), kind="stable")[:top_k]
    centres = (starts + ends) / 2
    figure, axes = plt.subplots(figsize=(10, 4))
    for index in top:
        axes.plot(centres, scored.window_scores[:, index], marker="." if len(centres) < 200
                  else None, label=class_names[index])
    axes.set_xlim(0, max(ends[-1], 1e-3))
    axes.set_xlabel("time (s): window centres")
    axes.set_ylabel("score")
    axes.set_title(f"{os.path.basename(base)}: the {len(top)} classes of highest window "
                   f"score, {len(starts)} windows")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(base + ".png", dpi=100)
    plt.close(figure)


def main(config):
    import keras
    import numpy as np

    from keras_astpe.data.audio_io import AudioDecodeError, load_audio
    from keras_astpe.inference import (
        ClipTooShortError,
        ProgressBar,
        Windows,
        audio_converter_of,
        check_length,
        class_names_of,
        score_clip,
    )

    model = keras.saving.load_model(config.model, compile=False)
    rate = audio_converter_of(model).sample_rate
    windows = Windows.for_model(model, config.windows)
    class_names = class_names_of(model)
    files = audio_files(config.audio)
    if not files:
        raise FileNotFoundError(f"--audio={config.audio}: no audio files in this folder")
    results = (ResultsFile(config.output, class_names, config.top_k, config.all_scores)
               if config.output else None)
    skipped = {}
    single = os.path.isfile(config.audio)
    try:
        for path in files:
            try:
                decoded = load_audio(path, rate)
                check_length(model, decoded.waveform, path)
                scored = score_clip(model, decoded.waveform, windows,
                                    ProgressBar(path) if config.progress else None)
            except (AudioDecodeError, ClipTooShortError) as error:
                if single and results is None:  # the one file asked for: one line, exit 1
                    raise ValueError(str(error)) from None
                reason = getattr(error, "reason", "too_short")
                skipped[reason] = skipped.get(reason, 0) + 1
                print(f"skipped {path}: {error}", file=sys.stderr)
                if results is not None:
                    results.skipped(path, error)
                continue
            order = np.argsort(-scored.scores, kind="stable")[:config.top_k]
            top = [(class_names[i], float(scored.scores[i])) for i in order]
            if results is not None:
                results.scored(path, decoded, scored, top)
            else:
                print(f"{path} ({decoded.duration_seconds:.2f} s, "
                      f"{decoded.original_sample_rate} Hz)")
                for name, score in top:
                    print(f"  {score:.4f}  {name}")
            if config.timeline:
                write_timeline(timeline_path(config, path), scored, class_names, config.top_k)
    finally:
        if results is not None:
            results.close()
    scored_count = len(files) - sum(skipped.values())
    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
    written = [f"results in {config.output}"] if results is not None else []
    if config.timeline:
        written.append(f"timelines in {config.timeline_dir}")
    print(f"Scored {scored_count} of {len(files)} files"
          + (f"; skipped {sum(skipped.values())} ({reasons})" if skipped else "")
          + (f"; {', '.join(written)}" if written else "") + ".")
    if not scored_count:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main, PredictConfig)
