"""Figures for training reports: learning curves, per-class AP, confusion matrix.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: no display is
needed and pyplot's global state (and the user's chosen backend) is left alone.
"""

import csv
import math
import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_X_COLUMNS = ("step", "epoch")
_MISSING = ("", "NA", "nan", "NaN")


def _new_figure(width, height):
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _suptitle(figure, text, fontsize=12):
    """A figure title wrapped to the figure's width (constrained layout keeps the lines
    inside the figure, but not a single line wider than it)."""
    characters = int(figure.get_figwidth() * 72 / (0.6 * fontsize))
    figure.suptitle(textwrap.fill(text, width=max(characters, 20)), fontsize=fontsize)


def _check_out_png(out_png):
    out_png = os.fspath(out_png)
    if not out_png.lower().endswith(".png"):
        raise ValueError(f"`out_png` must be a .png path. Received: {out_png}")
    parent = os.path.dirname(out_png)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return out_png


def _save(figure, out_png):
    figure.savefig(out_png, dpi=100)
    return out_png


def _check_names(class_names, count):
    class_names = [str(name) for name in class_names]
    if len(class_names) != count:
        raise ValueError(f"Expected {count} class names, received {len(class_names)}.")
    return class_names


def _read_csv_log(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"Training log not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"Training log {path} has no rows.")
    columns = {}
    for name in rows[0]:
        try:
            columns[name] = [
                float("nan") if row[name] in _MISSING else float(row[name]) for row in rows
            ]
        except ValueError:
            continue  # a non-numeric column (e.g. a timestamp) is not plotted
    return columns


def _load_history(history):
    if hasattr(history, "history"):  # a keras.callbacks.History
        history = history.history
    if isinstance(history, (str, os.PathLike)):
        return _read_csv_log(os.fspath(history))
    if not isinstance(history, dict):
        raise TypeError(
            "`history` must be a CSVLogger file path, a dict of metric lists or a "
            f"keras.callbacks.History. Received: {type(history).__name__}"
        )
    lengths = {len(values) for values in history.values()}
    if len(lengths) > 1:
        raise ValueError(f"All metrics in `history` must have the same length. Got {lengths}.")
    return {name: [float(v) for v in values] for name, values in history.items()}


def plot_learning_curves(history, out_png, title="Learning curves"):
    """Plots each metric against epochs or steps, training and validation together.

    Args:
        history: a `keras.callbacks.CSVLogger` file path, a dict `{metric: [values]}`
            (e.g. `History.history`) or a `keras.callbacks.History`. A `step` column, if
            present, is the x axis; otherwise `epoch` (0-based in Keras logs, shown 1-based
            as Keras prints it) or the row number.
        out_png: output PNG path; parent folders are created.
        title: figure title.

    Returns:
        `out_png`.
    """
    out_png = _check_out_png(out_png)
    columns = _load_history(history)
    x_name = next((name for name in _X_COLUMNS if name in columns), None)
    num_rows = len(next(iter(columns.values()), []))
    if x_name is None:
        x_name, x = "epoch", np.arange(1, num_rows + 1)
    else:
        x = np.asarray(columns[x_name]) + (1 if x_name == "epoch" else 0)
    metrics = [
        name for name in columns
        if name not in _X_COLUMNS and not (name.startswith("val_") and name[4:] in columns)
    ]
    if num_rows == 0 or not metrics:
        raise ValueError("`history` holds no metric values to plot.")

    num_cols = min(3, len(metrics))
    num_panel_rows = math.ceil(len(metrics) / num_cols)
    figure = _new_figure(4.5 * num_cols, 3.2 * num_panel_rows + 0.4)
    _suptitle(figure, title)
    axes = figure.subplots(num_panel_rows, num_cols, squeeze=False).ravel()
    for ax, name in zip(axes, metrics, strict=False):
        base = name[4:] if name.startswith("val_") else name
        marker = "o" if num_rows <= 30 else None
        if base in columns:
            ax.plot(x, columns[base], marker=marker, markersize=3, label="train")
        if f"val_{base}" in columns:
            ax.plot(x, columns[f"val_{base}"], marker=marker, markersize=3, label="validation")
            ax.legend(fontsize="small")
        ax.set_title(base)
        ax.set_xlabel(x_name)
        ax.set_ylabel(base)
        ax.grid(alpha=0.3)
        if base in ("learning_rate", "lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return _save(figure, out_png)


def plot_per_class_ap(per_class_ap, class_names, out_png, top_k=20, title="Per-class AP"):
    """Horizontal bar charts of the best and worst classes by average precision.

    Args:
        per_class_ap: `(num_classes,)` AP per class; NaN (classes without positives, as
            returned by `tagging_metrics`) are left out and counted in the title.
        class_names: `num_classes` display names.
        out_png: output PNG path; parent folders are created.
        top_k: number of best and of worst classes shown; all classes are shown in one
            panel when there are at most `2 * top_k`.
        title: figure title; the mAP over the plotted classes is appended.

    Returns:
        `out_png`.
    """
    out_png = _check_out_png(out_png)
    ap = np.asarray(per_class_ap, dtype=np.float64)
    if ap.ndim != 1:
        raise ValueError(f"`per_class_ap` must be 1-D. Received shape {ap.shape}.")
    class_names = _check_names(class_names, ap.shape[0])
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise ValueError(f"`top_k` must be an integer >= 1. Received: top_k={top_k}")
    valid = np.flatnonzero(~np.isnan(ap))
    if valid.size == 0:
        raise ValueError("`per_class_ap` has no finite value to plot.")
    if np.any((ap[valid] < 0) | (ap[valid] > 1)):
        raise ValueError("`per_class_ap` values must be in [0, 1] (or NaN for excluded classes).")
    order = valid[np.argsort(-ap[valid], kind="stable")]

    if order.size <= 2 * top_k:
        panels = [("all classes", order)]
    else:
        panels = [(f"best {top_k}", order[:top_k]), (f"worst {top_k}", order[-top_k:])]
    bars = max(len(indices) for _, indices in panels)
    label_width = min(max(len(class_names[i]) for i in order), 40)
    figure = _new_figure(len(panels) * (3.5 + 0.07 * label_width), 1.2 + 0.22 * bars)
    excluded = ap.size - valid.size
    suffix = f", {excluded} classes without positives excluded" if excluded else ""
    _suptitle(figure, f"{title} (mAP {np.mean(ap[valid]):.3f} over {valid.size} classes"
                      f"{suffix})")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, indices) in zip(axes, panels, strict=True):
        positions = np.arange(len(indices))
        ax.barh(positions, ap[indices], color="tab:blue")
        ax.set_yticks(positions, [_shorten(class_names[i], 40) for i in indices], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("average precision")
        ax.set_title(panel_title)
        ax.grid(axis="x", alpha=0.3)
        for position, value in zip(positions, ap[indices], strict=True):
            ax.text(value + 0.01, position, f"{value:.2f}", va="center", fontsize=7)
    return _save(figure, out_png)


def _shorten(name, width):
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_confusion_matrix(cm, class_names, out_png, title="Confusion matrix"):
    """Heat map of a confusion matrix (true classes in rows, predictions in columns).

    Cells are coloured by the fraction of the row (per-class recall, so classes of any size
    compare) and annotated with their non-zero counts.

    Args:
        cm: `(num_classes, num_classes)` non-negative counts, e.g. from
            `classification_metrics`.
        class_names: `num_classes` display names.
        out_png: output PNG path; parent folders are created.
        title: figure title; the overall accuracy is appended.

    Returns:
        `out_png`.
    """
    out_png = _check_out_png(out_png)
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"`cm` must be a non-empty square matrix. Received shape {cm.shape}.")
    if not np.issubdtype(cm.dtype, np.number) or not np.all(np.isfinite(cm)) or np.any(cm < 0):
        raise ValueError("`cm` must hold finite, non-negative counts.")
    class_names = _check_names(class_names, cm.shape[0])
    num_classes = cm.shape[0]
    row_sums = cm.sum(axis=1, keepdims=True)
    fractions = np.divide(cm, row_sums, out=np.zeros(cm.shape), where=row_sums > 0)

    size = max(5.0, 0.24 * num_classes + 2.5)
    label_size = 8 if num_classes <= 30 else 6
    figure = _new_figure(size + 1.0, size)
    total = cm.sum()
    accuracy = np.trace(cm) / total if total else float("nan")
    _suptitle(figure, f"{title} (accuracy {accuracy:.3f}, {int(total)} examples)")
    ax = figure.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.6, label="fraction of the true class")
    names = [_shorten(name, 24) for name in class_names]
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, names, rotation=90, fontsize=label_size)
    ax.set_yticks(ticks, names, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i, j in zip(*np.nonzero(cm), strict=True):
        color = "white" if fractions[i, j] > 0.6 else "black"
        ax.text(j, i, f"{cm[i, j]:g}", ha="center", va="center", fontsize=label_size - 1,
                color=color)
    return _save(figure, out_png)
