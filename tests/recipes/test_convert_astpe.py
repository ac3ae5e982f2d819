"""recipes/convert_astpe.py as a user runs it: the paper's checkpoints, one or averaged,
with the run's config, and what it assumed said after its output line."""

import joblib
import keras
import numpy as np
import pytest

from keras_astpe.conversion import convert_dienen
from tests.conversion import dienen_reference as reference
from tests.recipes.running import run_recipe

pytestmark = pytest.mark.backend_agnostic


def _run(*args):
    return run_recipe("convert_astpe", *args)


def test_swa_of_two_checkpoints_to_keras(tmp_path):
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"ckpt-{seed}.weights")
        joblib.dump(reference.checkpoint("learned_relative", np.random.default_rng(seed)),
                    paths[-1], compress=3)
    output = tmp_path / "relative.keras"
    result = _run(f"--checkpoint={paths[0]},{paths[1]}", "--pe=learned_relative",
                  f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "learned_relative, 2 checkpoint(s) averaged, 3 blocks of 32, 5 classes" in (
        result.stdout)
    model = keras.saving.load_model(output, safe_mode=True)
    waveform = np.random.default_rng(0).standard_normal((1, reference.SAMPLES)) * 0.3
    waveform = waveform.astype("float32")
    expected = convert_dienen(paths, "learned_relative")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(model.audio_converter(waveform))),
        keras.ops.convert_to_numpy(expected(expected.audio_converter(waveform))), atol=1e-6)


def test_wrong_kind_is_one_line(tmp_path):
    joblib.dump(reference.checkpoint("absolute", np.random.default_rng(0)),
                tmp_path / "a.weights")
    result = _run(f"--checkpoint={tmp_path / 'a.weights'}", "--pe=none",
                  f"--output={tmp_path / 'a.keras'}")
    assert result.returncode == 1
    assert "error:" in result.stderr and "a 'none' model has none of them" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _scores(model, waveform):
    return keras.ops.convert_to_numpy(model(model.audio_converter(waveform)))


def test_peg2_weights_with_their_config(tmp_path):
    """A peg2 checkpoint with its architecture YAML: the kind from the weights, the front end
    from the config, said in the output line; the saved model scores as the original,
    padding a short clip as its evaluation did."""
    layers = reference.checkpoint("conditional", np.random.default_rng(2))
    joblib.dump(layers, tmp_path / "peg2.weights", compress=3)
    (tmp_path / "peg2.yaml").write_text(reference.architecture_yaml("conditional", "peg2"))
    output = tmp_path / "peg2.keras"
    result = _run(f"--checkpoint={tmp_path / 'peg2.weights'}",
                  f"--config={tmp_path / 'peg2.yaml'}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"Wrote {output}: conditional, 1 checkpoint(s) averaged")
    assert ("log(mel + 0.0001), (x + 0.935) / 2.884, no ReLU; patches 32 x 8; short clips "
            f"zero-padded to {reference.SAMPLES:,} samples") in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  assumed: 32 x 8 patches")
    model = keras.saving.load_model(output, safe_mode=True)
    short = (0.3 * np.random.default_rng(0).standard_normal((1, reference.SAMPLES // 2))
             ).astype("float32")
    padded = np.pad(short, ((0, 0), (0, reference.SAMPLES - short.shape[1])))
    np.testing.assert_allclose(_scores(model, short),
                               reference.forward(layers, padded, "peg2"), atol=1e-4)


def test_bare_weights_list_every_assumption(tmp_path):
    joblib.dump(reference.checkpoint("none", np.random.default_rng(0)),
                tmp_path / "n.weights")
    result = _run(f"--checkpoint={tmp_path / 'n.weights'}", "--patches=8x32",
                  "--min_samples=0", f"--output={tmp_path / 'n.keras'}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert "none, 1 checkpoint(s) averaged" in lines[0]
    assert "patches 8 x 32; clips scored at their own length" in lines[0]
    assumed = [line.removeprefix("  assumed: ") for line in lines[1:]]
    expected = ["an input of 158,960 samples (", "1 attention heads (",
                "the paper's front end: log(mel + 0.001), (x + 5.61) / 7.68, ReLU ("]
    assert len(assumed) == len(expected)
    assert all(line.startswith(start) for line, start in zip(assumed, expected, strict=True))
