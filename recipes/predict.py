"""Prints the top classes of audio files scored by a saved model.

    python recipes/predict.py --model=saved_models/audioset-demo/time_alibi/model.keras \\
        --audio=dog.wav
    python recipes/predict.py --model=model.keras --audio=recordings/ --top_k=3

`--audio` is a file or a folder, walked recursively for audio files (the extensions the
TFRecord converters pick up). Any format and sample rate `keras_astpe.data.audio_io` reads
is decoded, mixed to mono and resampled as the converters do; clips of any length from one
patch (0.335 s) up are scored whole, or as sliding windows with `--window_seconds`. A file
that cannot be scored is reported on stderr and counted, and the last line sums up; the exit
code is 1 when no file could be scored. See `keras_astpe.inference.tag`.
"""

import dataclasses
import os
import sys

from keras_astpe import cli
from keras_astpe.inference import WindowSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictConfig:
    model: str = cli.setting(help="Saved model (.keras) that carries its front end.",
                             required=True)
    audio: str = cli.setting(help="Audio file, or folder searched recursively for audio "
                             "files.", required=True)
    top_k: int = cli.setting(5, help="Classes printed per file.")
    windows: WindowSettings = dataclasses.field(default_factory=WindowSettings)

    def __post_init__(self):
        if not os.path.isfile(self.model):
            raise FileNotFoundError(f"--model={self.model}: model file not found")
        if not os.path.exists(self.audio):
            raise FileNotFoundError(f"--audio={self.audio}: no such file or folder")
        if self.top_k < 1:
            raise ValueError(f"--top_k must be >= 1, got {self.top_k}")


def audio_files(path):
    """`path` itself, or the audio files under the folder `path`, sorted."""
    from tfrecords_tools.common import is_audio_file

    if os.path.isfile(path):
        return [path]
    found = []
    for folder, subfolders, names in os.walk(path):
        subfolders.sort()
        found.extend(os.path.join(folder, name) for name in sorted(names)
                     if is_audio_file(name))
    return found


def main(config):
    import keras

    from keras_astpe.data.audio_io import AudioDecodeError, load_audio
    from keras_astpe.inference import (
        ClipTooShortError,
        Windows,
        audio_converter_of,
        minimum_samples,
        tag,
    )

    model = keras.saving.load_model(config.model, compile=False)
    rate = audio_converter_of(model).sample_rate
    Windows.create(**config.windows.arguments(), sample_rate=rate,
                   minimum=minimum_samples(model))  # checked once
    files = audio_files(config.audio)
    if not files:
        raise FileNotFoundError(f"--audio={config.audio}: no audio files in this folder")
    skipped = {}
    single = os.path.isfile(config.audio)
    for path in files:
        try:
            decoded = load_audio(path, rate)
            result = tag(model, decoded.waveform, sample_rate=rate, top_k=config.top_k,
                         **config.windows.arguments())
        except (AudioDecodeError, ClipTooShortError) as error:
            if single:  # the one file asked for: an error (one line, exit code 1)
                raise ValueError(str(error)) from None
            reason = getattr(error, "reason", "too_short")
            skipped[reason] = skipped.get(reason, 0) + 1
            print(f"skipped {path}: {error}", file=sys.stderr)
            continue
        print(f"{path} ({decoded.duration_seconds:.2f} s, {decoded.original_sample_rate} Hz)")
        for name, score in result:
            print(f"  {score:.4f}  {name}")
    scored = len(files) - sum(skipped.values())
    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
    print(f"Scored {scored} of {len(files)} files" + (f"; skipped {sum(skipped.values())} "
                                                     f"({reasons})" if skipped else "") + ".")
    if not scored:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main, PredictConfig)
