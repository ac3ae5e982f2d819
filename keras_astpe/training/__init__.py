"""Training: the AudioSet and ESC-50 recipes, schedules, weight averaging, metrics, plots.

`train_audioset` / `evaluate_esc50` are what `recipes/train_audioset.py` and
`recipes/eval_esc50.py` run; `keras_astpe.training.experiment` holds their building blocks
(resumable checkpoints, deterministic data per checkpoint interval, demo data).
"""

from keras_astpe.training import experiment
from keras_astpe.training.audioset import AudioSetConfig, train_audioset
from keras_astpe.training.esc50 import ESC50Config, evaluate_esc50
from keras_astpe.training.experiment import (
    DropoutReseed,
    IntervalCheckpoint,
    LogLearningRate,
    latest_checkpoint,
    prepare_demo_data,
    restore_checkpoint,
)
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
    "DropoutReseed",
    "ESC50Config",
    "IntervalCheckpoint",
    "InverseSqrtSchedule",
    "LogLearningRate",
    "StochasticWeightAveraging",
    "WarmupExponentialDecay",
    "average_weights",
    "classification_metrics",
    "d_prime",
    "evaluate_esc50",
    "experiment",
    "latest_checkpoint",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_per_class_ap",
    "prepare_demo_data",
    "restore_checkpoint",
    "tagging_metrics",
    "train_audioset",
]
