"""Training: one engine (`engine.train`), the AudioSet and ESC-50 recipes, schedules,
weight averaging, metrics, plots.

`engine.train` is the training loop; `train_audioset` is its AudioSet configuration,
`train_own_data` its configuration for any converted dataset (`recipes/train.py`), and
`evaluate_esc50` runs the paper's per-fold fine-tuning. Their shared parts (output folder,
statistics, the preset's front end, compile with the paper's defaults, datasets) are in
`trainer`; exact resumption (seeds, interval data, dropout) in `resumption`; the run folder
(identity, verified checkpoints and weight snapshots) in `run_store`;
what a run writes in `outputs`.
"""

from keras_astpe.training import engine, outputs, resumption, run_store, trainer
from keras_astpe.training.audioset import AudioSetConfig, train_audioset
from keras_astpe.training.engine import TrainConfig, train
from keras_astpe.training.esc50 import ESC50Config, evaluate_esc50
from keras_astpe.training.metrics import classification_metrics, d_prime, tagging_metrics
from keras_astpe.training.own_data import OwnDataConfig, train_own_data
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
    "OwnDataConfig",
    "StochasticWeightAveraging",
    "TrainConfig",
    "WarmupExponentialDecay",
    "average_weights",
    "classification_metrics",
    "d_prime",
    "engine",
    "evaluate_esc50",
    "outputs",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_per_class_ap",
    "resumption",
    "run_store",
    "tagging_metrics",
    "train",
    "train_own_data",
    "train_audioset",
    "trainer",
]
