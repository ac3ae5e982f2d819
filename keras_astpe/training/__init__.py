"""Training: the AudioSet and ESC-50 recipes, schedules, weight averaging, metrics, plots.

`train_audioset` / `evaluate_esc50` are what `recipes/train_audioset.py` and
`recipes/eval_esc50.py` run. Their shared opening (output folder, statistics, compile with
the paper's defaults, datasets) is in `trainer`; exact resumption (seeds, verified
checkpoints, run identity) in `resumption`; what a run writes in `outputs`.
"""

from keras_astpe.training import outputs, resumption, trainer
from keras_astpe.training.audioset import AudioSetConfig, train_audioset
from keras_astpe.training.esc50 import ESC50Config, evaluate_esc50
from keras_astpe.training.metrics import classification_metrics, d_prime, tagging_metrics
from keras_astpe.training.plots import (
    plot_confusion_matrix,
    plot_learning_curves,
    plot_per_class_ap,
)
from keras_astpe.training.schedules import InverseSqrtSchedule, WarmupExponentialDecay
from keras_astpe.training.swa import StochasticWeightAveraging, average_weights

__all__ = [
    "AudioSetConfig",
    "ESC50Config",
    "InverseSqrtSchedule",
    "StochasticWeightAveraging",
    "WarmupExponentialDecay",
    "average_weights",
    "classification_metrics",
    "d_prime",
    "evaluate_esc50",
    "outputs",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_per_class_ap",
    "resumption",
    "tagging_metrics",
    "train_audioset",
    "trainer",
]
