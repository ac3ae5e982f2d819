"""Exports a saved model that takes audio: a TF Serving SavedModel, an ONNX or a LiteRT model.

    python recipes/export.py --model=saved_models/audioset-demo/time_alibi/model.keras
    python recipes/export.py --model=model.keras --output_dir=serving --name=tagger --version=2
    python recipes/export.py --model=model.keras --hop_seconds=5 --aggregation=max \\
        --max_clip_seconds=600 --max_request_seconds=1800 --max_batch=64
    python recipes/export.py --model=model.keras --format=onnx
    python recipes/export.py --model=model.keras --format=litert --seconds=10

`--format=onnx` and `--format=litert` write `<output_dir>/<name>.onnx` or `.tflite` (a
`.tflite` with `<name>.tflite.class_names.txt` beside it) and print its path: input
`waveform` float32 [batch, samples] at 16 kHz, any length from one patch or exactly
`--seconds`; outputs `scores` and `embedding`; each clip scored whole (see
`keras_astpe.serving.portable`).

`--format=tf_saved_model` (the default) writes `<output_dir>/<name>/<version>/`
(saved_model.pb, variables/, assets/class_names.txt), the layout
`tensorflow_model_server --model_base_path=<output_dir>/<name>` serves, and prints its
path. Signatures `serving_default` (16 kHz float waveforms) and `serving_wav` (WAV file
bytes at 8-48 kHz); see `keras_astpe.serving.saved_model`. A clip up to the model's trained
length is scored whole, a longer one as sliding windows of that length (`--window_seconds`,
`--hop_seconds`, `--aggregation`, `--whole_clips`, `--window_batch`); a request over the
limits (`--max_clip_seconds`, `--max_request_seconds`, `--max_batch`) is refused with an
error that names the limit. Works under any Keras backend: the export itself runs under
TensorFlow (in a subprocess when the backend is another).
"""

import dataclasses
import os

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.inference import WindowSettings
from keras_astpe.serving.export import FORMATS
from keras_astpe.serving.saved_model import ServingLimits


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    model: str = cli.setting(help="Saved model (.keras) that carries its front end.",
                             required=True)
    format: str = cli.setting("tf_saved_model", help="tf_saved_model (TF Serving), onnx "
                              "(ONNX Runtime) or litert (LiteRT, .tflite).")
    seconds: float | None = cli.setting(
        None, help="onnx and litert: the one clip length the model takes (default: any).")
    output_dir: str = cli.setting("saved_models/serving",
                                  help="Base folder of the served models.")
    name: str | None = cli.setting(
        None, help="Model name, the folder (or file name) under --output_dir (default: the "
        "folder holding the model for a model.keras, else the file name without .keras).")
    version: int | None = cli.setting(
        None, help="tf_saved_model: version folder (default: one more than the highest "
        "already there, or 1).")
    windows: WindowSettings = dataclasses.field(default_factory=WindowSettings)
    limits: ServingLimits = dataclasses.field(default_factory=ServingLimits)
    overwrite: bool = cli.setting(False, help="Replace an existing version folder.")

    def __post_init__(self):
        if not os.path.isfile(self.model):
            raise FileNotFoundError(f"--model={self.model}: model file not found")
        if self.version is not None and self.version < 1:
            raise ValueError(f"--version must be >= 1, got {self.version}")
        if self.name is not None and (not self.name or os.sep in self.name
                                      or self.name in (".", "..")):
            raise ValueError(f"--name must be a folder name, got {self.name!r}")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got "
                             f"{self.format!r}")
        saved_model_only = {"--version": self.version is not None,
                            "the window flags": self.windows != WindowSettings(),
                            "the limit flags": self.limits != ServingLimits()}
        if self.format != "tf_saved_model":
            given = [flag for flag, used in saved_model_only.items() if used]
            if given:
                raise ValueError(f"{', '.join(given)}: only for --format=tf_saved_model "
                                 f"(--format={self.format} scores each clip whole)")
        elif self.seconds is not None:
            raise ValueError("--seconds is for --format=onnx and litert (a SavedModel takes "
                             "clips of any length)")


def model_name(model_path):
    """`.../time_alibi/model.keras` -> `time_alibi`; `.../tagger.keras` -> `tagger`."""
    stem = os.path.splitext(os.path.basename(model_path))[0]
    if stem == "model":
        return os.path.basename(os.path.dirname(os.path.abspath(model_path))) or stem
    return stem


def next_version(base):
    """One more than the highest numeric version folder in `base`, or 1."""
    versions = [int(name) for name in os.listdir(base) if name.isdigit()] if (
        os.path.isdir(base)) else []
    return max(versions, default=0) + 1


SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}


def main(config):
    from keras_astpe.serving import export

    base = os.path.join(config.output_dir, config.name or model_name(config.model))
    if config.format == "tf_saved_model":
        version = config.version or next_version(base)
        print(export(config.model, os.path.join(base, str(version)),
                     **config.windows.arguments(), **config.limits.arguments(),
                     overwrite=config.overwrite))
        return
    os.makedirs(config.output_dir, exist_ok=True)
    print(export(config.model, base + SUFFIXES[config.format], format=config.format,
                 seconds=config.seconds, overwrite=config.overwrite))


if __name__ == "__main__":
    cli.run(main, ExportConfig)
