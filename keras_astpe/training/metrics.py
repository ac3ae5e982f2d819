"""Evaluation metrics for AudioSet tagging and ESC-50 classification (numpy, scikit-learn).

These are exact, whole-set metrics for reporting results. For monitoring during training,
use `keras.metrics.AUC(multi_label=True)` (ROC) or `keras.metrics.AUC(multi_label=True,
curve="PR")`, which approximate the same quantities with fixed thresholds and differ
slightly from the numbers computed here.
"""

import warnings

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score


def _check_scores(name, scores, ndim):
    scores = np.asarray(scores)
    if scores.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D. Received shape {scores.shape}.")
    if scores.shape[0] == 0:
        raise ValueError(f"`{name}` holds no example. Received shape {scores.shape}.")
    if not (np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)):
        raise ValueError(f"`{name}` must be real numbers. Received dtype {scores.dtype}.")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(
            f"`{name}` has {int(bad.sum())} NaN or infinite values (first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])})."
        )
    return scores.astype(np.float64)


def d_prime(auc):
    """Sensitivity index from a ROC AUC: `sqrt(2) * Phi^-1(auc)`, as reported by AST."""
    return float(np.sqrt(2.0) * norm.ppf(auc))


def tagging_metrics(y_true, y_score):
    """Multi-label tagging metrics: mAP, macro ROC AUC and d-prime (AudioSet protocol).

    A class enters the mAP if it has at least one positive example, and the AUC if it has
    both positives and negatives; excluded classes get NaN in `per_class`. `d_prime` is
    computed from the macro AUC, as in AST.

    Args:
        y_true: `(num_examples, num_classes)` binary labels (0/1 or bool).
        y_score: `(num_examples, num_classes)` real scores (probabilities or logits; only
            their order within each class matters).

    Returns:
        A dict with `mAP`, `AUC`, `d_prime` (floats, NaN with a warning when no class
        qualifies), `num_excluded_ap` and `num_excluded_auc` (ints) and `per_class`, a dict
        with `AP` and `AUC` float arrays of length `num_classes`.
    """
    y_score = _check_scores("y_score", y_score, ndim=2)
    y_true = np.asarray(y_true)
    if y_true.shape != y_score.shape:
        raise ValueError(
            f"`y_true` and `y_score` must have the same shape (num_examples, num_classes). "
            f"Received {y_true.shape} and {y_score.shape}."
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(
            "`y_true` must hold binary labels (0/1). Received values "
            f"{np.unique(y_true)[:10].tolist()}."
        )
    y_true = y_true.astype(np.int64)
    positives = y_true.sum(axis=0)
    has_positive = positives > 0
    has_both = has_positive & (positives < y_true.shape[0])

    ap = np.full(y_true.shape[1], np.nan)
    auc = np.full(y_true.shape[1], np.nan)
    for c in np.flatnonzero(has_positive):
        ap[c] = average_precision_score(y_true[:, c], y_score[:, c])
    for c in np.flatnonzero(has_both):
        auc[c] = roc_auc_score(y_true[:, c], y_score[:, c])

    mean_ap = _mean_or_nan(ap, "mAP", "has a positive example")
    mean_auc = _mean_or_nan(auc, "AUC", "has both positive and negative examples")
    return {
        "mAP": mean_ap,
        "AUC": mean_auc,
        "d_prime": d_prime(mean_auc),
        "num_excluded_ap": int((~has_positive).sum()),
        "num_excluded_auc": int((~has_both).sum()),
        "per_class": {"AP": ap, "AUC": auc},
    }


def _mean_or_nan(values, name, condition):
    if np.isnan(values).all():
        warnings.warn(f"{name} is undefined: no class {condition}.", RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(np.nanmean(values))


def classification_metrics(y_true, y_score):
    """Single-label classification metrics (ESC-50): accuracy and confusion matrix.

    Args:
        y_true: `(num_examples,)` integer class ids in `[0, num_classes)`.
        y_score: `(num_examples, num_classes)` real scores; the prediction is their argmax.

    Returns:
        A dict with `accuracy` (float in [0, 1]) and `confusion_matrix`, an int64
        `(num_classes, num_classes)` array with true classes in rows and predictions in
        columns.
    """
    y_score = _check_scores("y_score", y_score, ndim=2)
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise ValueError(
            f"`y_true` must be 1-D integer class ids. Received shape {y_true.shape} "
            "(for one-hot labels, pass `y_true.argmax(axis=-1)`)."
        )
    if y_true.shape[0] != y_score.shape[0]:
        raise ValueError(
            f"`y_true` has {y_true.shape[0]} examples but `y_score` has {y_score.shape[0]}."
        )
    num_classes = y_score.shape[1]
    if not np.issubdtype(y_true.dtype, np.integer) and not np.array_equal(
        y_true, np.round(y_true)
    ):
        raise ValueError(f"`y_true` must hold integer class ids. Received dtype {y_true.dtype}.")
    y_true = y_true.astype(np.int64)
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(
            f"`y_true` class ids must be in [0, {num_classes}) for {num_classes} score "
            f"columns. Received range [{y_true.min()}, {y_true.max()}]."
        )
    y_pred = y_score.argmax(axis=1)
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "confusion_matrix": confusion_matrix(
            y_true, y_pred, labels=np.arange(num_classes)
        ).astype(np.int64),
    }
