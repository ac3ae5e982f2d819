"""Figure 3 matrices checked by hand on embeddings of known structure, errors, PNGs."""

import math

import numpy as np
import pytest

from keras_astpe import build_model
from keras_astpe.analysis import (
    absolute_similarity,
    cosine_similarity,
    plot_position_similarities,
    position_similarities,
    relative_similarity,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ast-pe-tiny with 128 frames: a 4 x 8 grid of 64-d patches, 4 heads of 16.
TIME, FREQ, DIM, HEAD_DIM = 4, 8, 64, 16


def _model(pe, num_layers=2, **options):
    return build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128,
                       num_layers=num_layers, **options)


def test_cosine_similarity_by_hand():
    vectors = [[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]]
    r = 1 / math.sqrt(2)
    expected = [[1, 0, r, 0], [0, 1, r, 0], [r, r, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(cosine_similarity(vectors), expected, atol=1e-12)


def test_absolute_similarity_concatenates_the_embeddings_of_a_time_or_frequency():
    # t0 = [3, 0 | 0, 1], t1 = [3, 0 | 0, -1]: cos = (9 - 1) / 10 = 0.8, where the mean of
    # the per-band cosines would be (1 - 1) / 2 = 0.
    # f0 = [3, 0 | 3, 0], f1 = [0, 1 | 0, -1]: cos = 0.
    embeddings = np.array([[[3.0, 0.0], [0.0, 1.0]],
                           [[3.0, 0.0], [0.0, -1.0]]])
    time, freq = absolute_similarity(embeddings)
    assert (time.axis, time.table, time.block) == ("time", "absolute", None)
    np.testing.assert_allclose(time.matrix, [[1.0, 0.8], [0.8, 1.0]], atol=1e-12)
    np.testing.assert_allclose(freq.matrix, np.eye(2), atol=1e-12)
    np.testing.assert_array_equal(time.ticks, [0, 1])


def test_absolute_similarity_of_frequency_only_structure():
    # The paper's finding for absolute PE: embeddings that differ across frequency only.
    bands = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    embeddings = np.broadcast_to(bands, (5, 3, 2))
    time, freq = absolute_similarity(embeddings)
    np.testing.assert_allclose(time.matrix, np.ones((5, 5)), atol=1e-12)
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(freq.matrix, [[1, r, 0], [r, 1, -r], [0, -r, 1]], atol=1e-12)


def test_absolute_similarity_of_a_frequency_only_table():
    (freq,) = absolute_similarity([[1.0, 0.0], [-2.0, 0.0]])
    assert freq.axis == "frequency"
    np.testing.assert_allclose(freq.matrix, [[1, -1], [-1, 1]], atol=1e-12)


def test_relative_similarity_labels_rows_with_distances():
    time_table = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]  # distances -1, 0, +1
    freq_table = np.eye(5)  # distances -2..2, orthogonal
    time, freq = relative_similarity(time_table, freq_table, block=3)
    np.testing.assert_array_equal(time.ticks, [-1, 0, 1])
    np.testing.assert_array_equal(freq.ticks, [-2, -1, 0, 1, 2])
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(time.matrix, [[1, r, 0], [r, 1, r], [0, r, 1]], atol=1e-12)
    np.testing.assert_allclose(freq.matrix, np.eye(5), atol=1e-12)
    assert (time.name, freq.name) == ("relative_time_block_3", "relative_frequency_block_3")
    with pytest.raises(ValueError, match="2N-1"):
        relative_similarity(np.ones((4, 2)), freq_table)


@pytest.mark.parametrize("pe", ["absolute", "conditional_absolute"])
def test_model_absolute_table(pe):
    model = _model(pe)
    bands = np.random.normal(size=(FREQ, DIM))
    model.backbone.position_embedding.embeddings.assign(
        np.broadcast_to(bands, (TIME, FREQ, DIM)).astype("float32"))
    time, freq = position_similarities(model)
    np.testing.assert_allclose(time.matrix, np.ones((TIME, TIME)), atol=1e-6)
    np.testing.assert_allclose(freq.matrix, cosine_similarity(bands), atol=1e-6)


def test_model_time_alibi_has_frequency_panel_only():
    model = _model("time_alibi")
    table = np.random.normal(size=(FREQ, DIM)).astype("float32")
    model.backbone.position_embedding.embeddings.assign(table)
    (freq,) = position_similarities(model.backbone)  # a backbone works too
    assert freq.axis == "frequency"
    np.testing.assert_allclose(freq.matrix, cosine_similarity(table), atol=1e-6)


def test_model_learned_relative_per_block():
    model = _model("learned_relative", num_layers=3)
    bias = model.backbone.blocks[1].attention.position_bias
    time_table = np.random.normal(size=(2 * TIME - 1, HEAD_DIM)).astype("float32")
    time_table[TIME] = -time_table[TIME - 2]  # distance +1 = -(distance -1)
    bias.time_embeddings.assign(time_table)

    panels = position_similarities(model)
    assert [(p.block, p.axis) for p in panels] == [
        (b, axis) for b in range(3) for axis in ("time", "frequency")]
    for block in (1, -2):
        time, freq = position_similarities(model, block=block)
        assert time.block == 1
        np.testing.assert_array_equal(time.ticks, np.arange(1 - TIME, TIME))
        np.testing.assert_array_equal(freq.ticks, np.arange(1 - FREQ, FREQ))
        np.testing.assert_allclose(time.matrix, cosine_similarity(time_table), atol=1e-6)
        assert time.matrix[TIME - 2, TIME] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"block.*\[0, 3\)"):
        position_similarities(model, block=3)


def test_relative_ticks_are_key_minus_query():
    """Row r of E^t is the distance key - query = r - (T-1), the ticks' order."""
    table = np.random.normal(size=(2 * TIME - 1, HEAD_DIM)).astype("float32")
    table[0] = 0.0  # zero the row of key - query = -(T-1): its similarities are all 0
    model = _model("learned_relative", num_layers=1)
    model.backbone.blocks[0].attention.position_bias.time_embeddings.assign(table)
    time, _ = position_similarities(model)
    np.testing.assert_array_equal(time.ticks, np.arange(1 - TIME, TIME))
    np.testing.assert_allclose(time.matrix, cosine_similarity(table), atol=1e-6)
    np.testing.assert_array_equal(time.matrix[0], 0.0)


@pytest.mark.parametrize("pe", ["none", "alibi_2d", "conditional"])
def test_encodings_without_tables_raise(pe, tmp_path):
    model = _model(pe)
    with pytest.raises(ValueError, match=f"'{pe}' has no position embeddings to plot"):
        position_similarities(model)
    with pytest.raises(ValueError, match="no position embeddings to plot"):
        plot_position_similarities(model, tmp_path)
    assert not list(tmp_path.iterdir())


def test_block_is_for_learned_relative_only():
    with pytest.raises(ValueError, match="selects a learned_relative block"):
        position_similarities(_model("absolute"), block=0)


def test_not_a_model_raises():
    with pytest.raises(TypeError, match="ASTClassifier or an ASTBackbone"):
        position_similarities(object())


def _assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000


@pytest.mark.backend_agnostic
def test_plot_absolute(tmp_path):
    paths = plot_position_similarities(_model("absolute"), tmp_path / "figures",
                                       model_name="absolute.keras")
    assert paths == [str(tmp_path / "figures" / "position_similarity_absolute.png")]
    _assert_png(paths[0])


@pytest.mark.backend_agnostic
def test_plot_learned_relative(tmp_path):
    model = _model("learned_relative")
    names = ["position_similarity_block_00.png", "position_similarity_block_01.png",
             "position_similarity_time_all_blocks.png",
             "position_similarity_frequency_all_blocks.png"]
    assert plot_position_similarities(model, tmp_path) == [str(tmp_path / n) for n in names]
    for name in names:
        _assert_png(tmp_path / name)
    only = plot_position_similarities(model, tmp_path / "one", block=1)
    assert only == [str(tmp_path / "one" / "position_similarity_block_01.png")]
