"""The paper's own checkpoints (dienen): every PE kind converts and gives the original's
scores on the same waveform; SWA averages; `.dnn` models; clear errors.

The fixtures and the reference forward (`dienen_reference`) are written from the
documented format and maths; offline they were checked against the original GPL code
(which the repository does not hold): the reference matches it to 5e-7 for every kind.
The variants of the study's runs that the weights' shapes do not show are in
`test_dienen_variants.py`.
"""

import joblib
import keras
import numpy as np
import pytest

from keras_astpe import PE_KINDS
from keras_astpe.conversion.dienen import ORIGINAL_STATS, convert_dienen
from keras_astpe.models.audio_converter import LogMelAudioConverter
from tests.conversion import dienen_reference as reference


def _waveform():
    return (0.3 * np.random.default_rng(1).standard_normal((2, reference.SAMPLES))
            ).astype("float32")


def _scores(model, waveform):
    return keras.ops.convert_to_numpy(model(model.audio_converter(waveform)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dienen")
    paths = {}
    for kind in PE_KINDS:
        layers = reference.checkpoint(kind, np.random.default_rng(PE_KINDS.index(kind)))
        paths[kind] = folder / f"{kind}.weights"
        joblib.dump(layers, paths[kind], compress=3)
    return paths


@pytest.mark.parametrize("kind", PE_KINDS)
def test_every_kind_gives_the_original_scores(kind, checkpoints):
    model = convert_dienen(checkpoints[kind], kind, num_heads=reference.HEADS,
                           min_samples=reference.SAMPLES)
    waveform = _waveform()
    expected = reference.forward(joblib.load(checkpoints[kind]), waveform)
    np.testing.assert_allclose(_scores(model, waveform), expected, atol=1e-4)
    backbone = model.backbone
    assert backbone.final_norm is None and not backbone.use_feedforward_bias
    assert isinstance(model.audio_converter, LogMelAudioConverter)
    assert model.audio_converter.stats.low == ORIGINAL_STATS.low == -5.61
    assert model.audio_converter.stats.high == 2.07
    if kind in ("alibi_2d", "time_alibi"):
        assert (backbone.alibi_slopes, backbone.alibi_block_cls) == ("code", "time_heads")
    read = convert_dienen(checkpoints[kind], num_heads=reference.HEADS)  # kind from the file
    assert read.backbone.position_encoding == kind


def test_converted_model_saves_and_loads(checkpoints, tmp_path):
    model = convert_dienen(checkpoints["conditional_absolute"], "conditional_absolute",
                           num_heads=reference.HEADS)
    assert model.backbone.peg_cls_embedding and len(model.backbone.pegs) == reference.PEGS
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    waveform = _waveform()
    np.testing.assert_allclose(_scores(restored, waveform), _scores(model, waveform),
                               atol=1e-6)


def test_several_checkpoints_are_averaged(checkpoints, tmp_path):
    """SWA: the model of the mean weights, as the paper's notebooks average checkpoints."""
    first = reference.checkpoint("absolute", np.random.default_rng(10))
    second = reference.checkpoint("absolute", np.random.default_rng(11))
    mean = {name: [[(a + b) / 2 for a, b in zip(first[name][0], second[name][0], strict=True)],
                   first[name][1]] for name in first}
    for name, layers in (("a", first), ("b", second)):
        joblib.dump(layers, tmp_path / f"{name}.weights")
    model = convert_dienen([tmp_path / "a.weights", tmp_path / "b.weights"], "absolute",
                           num_heads=reference.HEADS)
    waveform = _waveform()
    np.testing.assert_allclose(_scores(model, waveform), reference.forward(mean, waveform),
                               atol=1e-4)


def test_dnn_model_files_are_read_without_dienen(tmp_path):
    """A `.dnn` is a pickled dienen `Model` (state: weights without variable names, configs
    of kahnfigh classes); it is read with inert stand-ins for those classes."""
    layers = reference.checkpoint("time_alibi", np.random.default_rng(3))
    reference.write_dnn(tmp_path / "model.dnn", layers)
    model = convert_dienen(tmp_path / "model.dnn", "time_alibi")
    waveform = _waveform()
    np.testing.assert_allclose(_scores(model, waveform), reference.forward(layers, waveform),
                               atol=1e-4)


def test_nothing_in_the_file_runs(tmp_path):
    """Classes outside numpy's arrays become inert: a pickle cannot call os.system."""
    class Exploit:
        def __reduce__(self):
            import os
            return os.system, ("echo pwned > " + str(tmp_path / "pwned"),)

    joblib.dump({"layer": [[Exploit()], ["x"]]}, tmp_path / "evil.weights")
    with pytest.raises(ValueError):
        convert_dienen(tmp_path / "evil.weights", "none")
    assert not (tmp_path / "pwned").exists()


def test_wrong_kind_and_bad_files_are_clear_errors(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="has a position table; a 'conditional' model has "
                                         "PEGs"):
        convert_dienen(checkpoints["absolute"], "conditional")
    with pytest.raises(ValueError, match="Unknown positional encoding 'rotary'"):
        convert_dienen(checkpoints["absolute"], "rotary")
    with pytest.raises(FileNotFoundError, match="missing.weights: checkpoint file not found"):
        convert_dienen(tmp_path / "missing.weights", "none")
    (tmp_path / "text.weights").write_text("not a pickle")
    with pytest.raises(ValueError, match="text.weights: not a joblib checkpoint"):
        convert_dienen(tmp_path / "text.weights", "none")
    joblib.dump(reference.checkpoint("none", np.random.default_rng(0)), tmp_path / "n.weights")
    other = reference.checkpoint("absolute", np.random.default_rng(0))
    joblib.dump(other, tmp_path / "a.weights")
    with pytest.raises(ValueError, match="a.weights: other layers than"):
        convert_dienen([tmp_path / "n.weights", tmp_path / "a.weights"], "none")
