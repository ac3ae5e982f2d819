"""Backbone, classifier and presets."""

from keras_astpe.models.backbone import PE_KINDS, ASTBackbone
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.models.presets import PRESETS, get_preset

__all__ = ["PE_KINDS", "PRESETS", "ASTBackbone", "ASTClassifier", "get_preset"]
