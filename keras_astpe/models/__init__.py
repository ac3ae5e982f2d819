"""Backbone, classifier, its audio converter, presets and the table of positional encodings."""

from keras_astpe.models.audio_converter import (
    AudioConverter,
    KaldiFbankAudioConverter,
    LogMelAudioConverter,
)
from keras_astpe.models.backbone import ASTBackbone
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.models.position_encodings import (
    PE_KINDS,
    POSITION_ENCODINGS,
    PositionEncoding,
    get_position_encoding,
)
from keras_astpe.models.presets import (
    PRESETS,
    Preset,
    get_front_end,
    get_head,
    get_preset,
    preset_audio_converter,
)

__all__ = [
    "PE_KINDS",
    "POSITION_ENCODINGS",
    "PRESETS",
    "ASTBackbone",
    "ASTClassifier",
    "AudioConverter",
    "KaldiFbankAudioConverter",
    "LogMelAudioConverter",
    "PositionEncoding",
    "Preset",
    "get_front_end",
    "get_head",
    "get_position_encoding",
    "get_preset",
    "preset_audio_converter",
]
