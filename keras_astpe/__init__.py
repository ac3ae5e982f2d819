"""keras-astpe: the Audio Spectrogram Transformer and the positional encodings of the AST-PE
study, as Keras 3 layers and models for the TensorFlow, JAX and PyTorch backends.

    import keras_astpe
    model = keras_astpe.build_model("conditional", preset="ast-pe", num_classes=527)

Importing the package sets nothing in the process (environment, allocator, TensorFlow's
devices); a program that trains or serves calls `keras_astpe_startup.configure()` first.
tensorflow-io is deliberately not imported here (see README, "tensorflow-io").
"""

import inspect

from keras_astpe.inference import attach_audio_converter, tag
from keras_astpe.models import (
    PE_KINDS,
    POSITION_ENCODINGS,
    PRESETS,
    ASTBackbone,
    ASTClassifier,
    KaldiFbankAudioConverter,
    LogMelAudioConverter,
    get_head,
    get_preset,
)
from keras_astpe.serving import export, export_saved_model

__version__ = "0.1.0"


def build_model(pe, preset="ast-pe", num_classes=527, activation="sigmoid",
                audio_converter=None, class_names=None, **overrides):
    """Builds an AST classifier from log-mel features `[batch, frames, mel_bins]` to scores.

    Args:
        pe: positional encoding, one of `PE_KINDS`: `none`, `absolute`, `alibi_2d`,
            `time_alibi`, `learned_relative`, `conditional`, `conditional_absolute`.
        preset: model size, one of `PRESETS` (`ast-pe` is the paper's).
        num_classes: output classes (527 for AudioSet, 50 for ESC-50).
        activation: `"sigmoid"` (multi-label), `"softmax"` (single-label) or None (logits).
        audio_converter: the front end the model carries (e.g. a `LogMelAudioConverter`
            with the training set's statistics), so that it scores raw audio once saved.
        class_names: names of the outputs, saved with the model.
        **overrides: any `ASTBackbone` argument, replacing the preset's value
            (e.g. `num_layers=6`, `num_frames=496`, `dtype="mixed_bfloat16"`).

    Returns:
        An `ASTClassifier` (a `keras.Model`); `model.backbone` is the `ASTBackbone`.
    """
    config = get_preset(preset)
    unknown = set(overrides) - _backbone_arguments()
    if unknown:
        raise TypeError(f"Unknown model arguments {sorted(unknown)}; expected any of "
                        f"{sorted(_backbone_arguments())}.")
    config.update(overrides)
    backbone = ASTBackbone(position_encoding=pe, **config)
    return ASTClassifier(backbone, num_classes, activation=activation,
                         audio_converter=audio_converter, class_names=class_names,
                         **get_head(preset))


def _backbone_arguments():
    """The named arguments of `ASTBackbone` that `build_model` passes on."""
    parameters = inspect.signature(ASTBackbone.__init__).parameters.values()
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            } - {"self", "position_encoding"}


__all__ = ["PE_KINDS", "POSITION_ENCODINGS", "PRESETS", "ASTBackbone", "ASTClassifier",
           "KaldiFbankAudioConverter", "LogMelAudioConverter", "attach_audio_converter",
           "build_model", "export", "export_saved_model", "get_preset", "tag"]
