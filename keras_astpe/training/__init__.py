"""Training utilities: learning-rate schedules, weight averaging, metrics and plots."""

from keras_astpe.training.metrics import classification_metrics, d_prime, tagging_metrics
from keras_astpe.training.plots import (
    plot_confusion_matrix,
    plot_learning_curves,
    plot_per_class_ap,
)
from keras_astpe.training.schedules import InverseSqrtSchedule, WarmupExponentialDecay
from keras_astpe.training.swa import StochasticWeightAveraging, average_weights

__all__ = [
    "InverseSqrtSchedule",
    "StochasticWeightAveraging",
    "WarmupExponentialDecay",
    "average_weights",
    "classification_metrics",
    "d_prime",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_per_class_ap",
    "tagging_metrics",
]
