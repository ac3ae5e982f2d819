import csv

import numpy as np
import pytest

from keras_astpe.training import plot_confusion_matrix, plot_learning_curves, plot_per_class_ap

pytestmark = pytest.mark.backend_agnostic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000


def _write_csv_log(path, epochs=8):
    # The layout of keras.callbacks.CSVLogger: 0-based epoch, then sorted metric names.
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "auc", "learning_rate", "loss", "val_auc", "val_loss"])
        for e in range(epochs):
            writer.writerow([e, 0.6 + 0.04 * e, 5e-4 * 0.85**e, 0.7 / (e + 1), 0.55 + 0.035 * e,
                             0.8 / (e + 1) + 0.05])
    return path


def test_learning_curves_from_csv_log(tmp_path):
    out = tmp_path / "figures" / "curves.png"
    assert plot_learning_curves(_write_csv_log(tmp_path / "log.csv"), out) == str(out)
    _assert_png(out)


def test_learning_curves_from_history_dict_with_missing_values(tmp_path):
    history = {"loss": [1.0, 0.5, 0.4], "val_loss": [1.2, float("nan"), 0.6],
               "mAP": [0.1, 0.2, 0.25]}
    out = tmp_path / "curves.png"
    plot_learning_curves(history, out)
    _assert_png(out)


def test_learning_curves_errors(tmp_path):
    out = tmp_path / "curves.png"
    with pytest.raises(FileNotFoundError, match="not found"):
        plot_learning_curves(tmp_path / "missing.csv", out)
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="no rows"):
        plot_learning_curves(tmp_path / "empty.csv", out)
    with pytest.raises(ValueError, match="same length"):
        plot_learning_curves({"loss": [1, 2], "val_loss": [1]}, out)
    with pytest.raises(ValueError, match="no metric"):
        plot_learning_curves({"epoch": [0, 1]}, out)
    with pytest.raises(TypeError, match="CSVLogger file path"):
        plot_learning_curves([1, 2, 3], out)
    with pytest.raises(ValueError, match=".png"):
        plot_learning_curves({"loss": [1.0]}, tmp_path / "curves.jpg")
    assert not out.exists()


def test_per_class_ap_best_and_worst(tmp_path):
    rng = np.random.default_rng(0)
    ap = rng.uniform(size=120)
    ap[[3, 50]] = np.nan
    names = [f"class {i} with a rather long display name" for i in range(120)]
    out = tmp_path / "ap.png"
    plot_per_class_ap(ap, names, out, top_k=15)
    _assert_png(out)


def test_per_class_ap_few_classes_in_one_panel(tmp_path):
    out = tmp_path / "ap.png"
    plot_per_class_ap([0.9, 0.1, 0.5], ["dog", "rain", "siren"], out, top_k=5)
    _assert_png(out)


@pytest.mark.parametrize(
    ("ap", "names", "kwargs", "match"),
    [
        ([0.5, 0.6], ["a"], {}, "Expected 2 class names"),
        ([[0.5]], ["a"], {}, "must be 1-D"),
        ([np.nan, np.nan], ["a", "b"], {}, "no finite value"),
        ([0.5, 1.5], ["a", "b"], {}, r"in \[0, 1\]"),
        ([0.5, 0.6], ["a", "b"], {"top_k": 0}, "top_k"),
    ],
)
def test_per_class_ap_errors(tmp_path, ap, names, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_per_class_ap(ap, names, tmp_path / "ap.png", **kwargs)


def test_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(4, 9, size=50)) + (rng.uniform(size=(50, 50)) > 0.97)
    names = [f"category_{i}" for i in range(50)]
    out = tmp_path / "cm.png"
    plot_confusion_matrix(cm, names, out)
    _assert_png(out)


@pytest.mark.parametrize(
    ("cm", "names", "match"),
    [
        (np.ones((2, 3)), ["a", "b"], "square"),
        (np.ones((2, 2)), ["a"], "Expected 2 class names"),
        (-np.ones((2, 2)), ["a", "b"], "non-negative"),
        (np.full((2, 2), np.nan), ["a", "b"], "finite"),
    ],
)
def test_confusion_matrix_errors(tmp_path, cm, names, match):
    with pytest.raises(ValueError, match=match):
        plot_confusion_matrix(cm, names, tmp_path / "cm.png")


def test_long_titles_stay_inside_the_figure():
    from keras_astpe.training.plots import _new_figure, _suptitle

    figure = _new_figure(4.3, 3.0)
    _suptitle(figure, "Per-class AP, time_alibi (eval) (mAP 0.666 over 10 classes, "
                      "2 classes without positives excluded)")
    figure.canvas.draw()
    box = figure._suptitle.get_window_extent(figure.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width
    assert "\n" in figure._suptitle.get_text()
