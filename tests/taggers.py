"""Tiny taggers that carry their front end and class names, and test noise, for the tests
of scoring, serving and the recipes that load models."""

import numpy as np

from keras_astpe import build_model
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.normalization import NormalizationStats

CLASSES = ("dog", "rain", "siren")
# Non-default statistics, so that a consumer that ignores the model's own shows.
STATS = NormalizationStats(low=-6.5, high=1.5, num_clips=10, frontend=FrontEndConfig())


def tagger(pe="time_alibi", activation="sigmoid", converter=True, class_names=CLASSES,
           stats=STATS):
    """An `ast-pe-tiny` classifier; with `converter`, carrying the paper's front end with
    `stats` and `class_names` (without, a bare model as saved before models carried them)."""
    bare = build_model(pe, preset="ast-pe-tiny", num_classes=len(class_names),
                       activation=activation)
    if not converter:
        return bare
    return ASTClassifier(bare.backbone, len(class_names), activation=activation,
                         audio_converter=LogMelAudioConverter(FrontEndConfig(), stats),
                         class_names=class_names)


def noise(samples, seed=0, amplitude=0.3):
    """Gaussian noise in [-1, 1], float32."""
    rng = np.random.default_rng(seed)
    return np.clip(amplitude * rng.standard_normal(samples), -1, 1).astype(np.float32)
