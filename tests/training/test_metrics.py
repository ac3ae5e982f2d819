import numpy as np
import pytest

from keras_astpe.training import classification_metrics, d_prime, tagging_metrics

pytestmark = pytest.mark.backend_agnostic


def test_tagging_metrics_hand_computed():
    # Class 0: scores ranked 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-).
    #   AP = mean of precision at each positive = (1/1 + 2/3) / 2 = 5/6.
    #   AUC = fraction of (pos, neg) pairs ranked correctly: (0.9>0.8, 0.9>0.1, 0.7>0.1) = 3/4.
    # Class 1: one positive ranked second: AP = 1/2, AUC = 2/3 (beats 2 of 3 negatives).
    # Class 2: no positive: excluded from mAP and AUC.
    # Class 3: all positive: AP = 1, excluded from AUC.
    y_true = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]])
    y_score = np.array([[0.9, 0.7, 0.1, 0.2],
                        [0.8, 0.8, 0.2, 0.4],
                        [0.7, 0.9, 0.3, 0.6],
                        [0.1, 0.1, 0.4, 0.8]])
    result = tagging_metrics(y_true, y_score)
    np.testing.assert_allclose(result["per_class"]["AP"], [5 / 6, 1 / 2, np.nan, 1.0])
    np.testing.assert_allclose(result["per_class"]["AUC"], [3 / 4, 2 / 3, np.nan, np.nan])
    assert result["mAP"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert result["AUC"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert result["num_excluded_ap"] == 1
    assert result["num_excluded_auc"] == 2
    assert result["d_prime"] == pytest.approx(d_prime(result["AUC"]))


def test_ties_count_half_in_auc():
    # One positive and one negative with equal scores: AUC 0.5; AP = precision 1/2.
    result = tagging_metrics(np.array([[1], [0]]), np.array([[0.3], [0.3]]))
    assert result["AUC"] == pytest.approx(0.5)
    assert result["mAP"] == pytest.approx(0.5)
    assert result["d_prime"] == pytest.approx(0.0)


def test_d_prime():
    assert d_prime(0.5) == 0.0
    # Phi^-1(0.8413447) = 1 (one standard deviation), so d' = sqrt(2).
    assert d_prime(0.8413447460685429) == pytest.approx(np.sqrt(2.0))
    assert d_prime(1.0) == np.inf


def test_perfect_scores_and_logits():
    y_true = np.eye(3, dtype=bool)
    logits = np.where(y_true, 5.0, -5.0)
    result = tagging_metrics(y_true, logits)
    assert result["mAP"] == 1.0 and result["AUC"] == 1.0


def test_no_valid_class_gives_nan_with_a_warning():
    with (pytest.warns(RuntimeWarning, match="mAP is undefined"),
          pytest.warns(RuntimeWarning, match="AUC is undefined")):
        result = tagging_metrics(np.zeros((3, 2)), np.random.default_rng(0).uniform(size=(3, 2)))
    assert np.isnan(result["mAP"]) and np.isnan(result["AUC"]) and np.isnan(result["d_prime"])
    assert result["num_excluded_ap"] == 2


@pytest.mark.parametrize(
    ("y_true", "y_score", "match"),
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "same shape"),
        (np.zeros(3), np.zeros(3), "must be 2-D"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "no example"),
        (np.array([[0, 2]]), np.zeros((1, 2)), "binary labels"),
        (np.zeros((2, 2)), np.array([[0.1, np.nan], [0.2, 0.3]]), r"1 NaN .*\(0, 1\)"),
        (np.zeros((2, 2)), np.array([[0.1, 0.2], [np.inf, 0.3]]), "infinite"),
        (np.zeros((1, 2)), np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_tagging_metrics_errors(y_true, y_score, match):
    with pytest.raises(ValueError, match=match):
        tagging_metrics(y_true, y_score)


def test_classification_metrics_hand_computed():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_score = np.array([[0.9, 0.1, 0.0],   # 0 -> 0
                        [0.2, 0.7, 0.1],   # 0 -> 1
                        [0.1, 0.8, 0.1],   # 1 -> 1
                        [0.0, 0.1, 0.9],   # 2 -> 2
                        [0.5, 0.2, 0.3],   # 2 -> 0
                        [0.1, 0.2, 0.7]])  # 2 -> 2
    result = classification_metrics(y_true, y_score)
    assert result["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_array_equal(result["confusion_matrix"],
                                  [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert result["confusion_matrix"].dtype == np.int64


def test_classification_metrics_keeps_absent_classes():
    result = classification_metrics(np.array([0, 0]), np.array([[1.0, 0, 0], [1.0, 0, 0]]))
    assert result["confusion_matrix"].shape == (3, 3)
    assert result["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("y_true", "y_score", "match"),
    [
        (np.eye(3), np.eye(3), "1-D integer class ids"),
        (np.array([0, 1]), np.eye(3), "2 examples but `y_score` has 3"),
        (np.array([0, 3, 1]), np.eye(3), r"in \[0, 3\)"),
        (np.array([0, -1, 1]), np.eye(3), r"in \[0, 3\)"),
        (np.array([0.0, 0.5, 1.0]), np.eye(3), "integer class ids"),
        (np.array([0, 1, 2]), np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]), "NaN"),
        (np.array([0, 1, 2]), np.zeros(3), "must be 2-D"),
    ],
)
def test_classification_metrics_errors(y_true, y_score, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y_true, y_score)
