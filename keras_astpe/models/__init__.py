"""Backbone, classifier, its audio converter, presets and the table of positional encodings."""

from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.backbone import ASTBackbone
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.models.position_encodings import (
    PE_KINDS,
    POSITION_ENCODINGS,
    PositionEncoding,
    get_position_encoding,
)
from keras_astpe.models.presets import PRESETS, get_preset

__all__ = [
    "PE_KINDS",
    "POSITION_ENCODINGS",
    "PRESETS",
    "ASTBackbone",
    "ASTClassifier",
    "LogMelAudioConverter",
    "PositionEncoding",
    "get_position_encoding",
    "get_preset",
]
