"""The README's quick start as a user runs it, in an empty folder: command 1 ends with the
README's block and `recipes/eval_esc50.py` then gives the README's accuracy, word for word,
with the scores within a tolerance."""

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.recipes.running import ROOT, run_recipe

pytestmark = [pytest.mark.backend_agnostic, pytest.mark.slow]

README = (ROOT / "README.md").read_text()
# A score is a name and its value: "mAP 0.714", "accuracy 82.5", "+- 3.5", and the pooled
# accuracy after "folds,".
SCORE = re.compile(r"(mAP|AUC|d'|accuracy|\+-|folds,) (\d+\.\d+)")
# Another CPU's float rounding (oneDNN's kernels differ between instruction sets) changes
# the 800 steps' trajectory a little; a broken recipe is far off (chance: mAP 0.17, 10%).
TOLERANCE = {"mAP": 0.03, "AUC": 0.03, "d'": 0.15, "accuracy": 7.5, "+-": 5.0,
             "folds,": 7.5}


def _scores(line):
    """{name: value} of the scores on a result line (`mAP 0.714`, `accuracy 82.5`, ...)."""
    return {name: float(value) for name, value in SCORE.findall(line)}


def _check(expected, printed):
    for want, got in zip(expected, printed, strict=True):
        assert SCORE.sub(r"\1 #", got) == SCORE.sub(r"\1 #", want), (got, want)
        got_scores = _scores(got)
        for name, value in _scores(want).items():
            assert abs(got_scores[name] - value) <= TOLERANCE[name], (name, got, want)


def _lines_from(output, first):
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(first)), None)
    assert start is not None, f"no line starting with {first!r} in:\n{output[-3000:]}"
    return lines[start:]


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """The empty folder command 1 ran in, and what it printed."""
    work = tmp_path_factory.mktemp("quick_start")
    command = re.search(r"pip install -e \. && python (recipes/train_audioset\.py[^\n]*)",
                        README)
    result = run_recipe("train_audioset", *shlex.split(command.group(1))[1:], cwd=work,
                        timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result.stdout


def test_command_1_ends_as_the_readme_shows(quick_start):
    work, output = quick_start
    expected = README.split("and ends with:\n\n```\n", 1)[1].split("```", 1)[0]
    expected = expected.strip().splitlines()
    _check(expected, _lines_from(output, expected[0][:20])[:len(expected)])
    assert (work / "saved_models/audioset-demo/time_alibi/model.keras").is_file()


def test_esc50_demo_gives_the_readmes_accuracy(quick_start):
    work, _ = quick_start
    expected = re.search(r"gives `(accuracy [^`]*)`", README).group(1)
    result = run_recipe("eval_esc50", cwd=work, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    line = _lines_from(result.stdout, "ESC-50 (time_alibi): accuracy")[0]
    _check([expected], [line.removeprefix("ESC-50 (time_alibi): ")])


def test_the_model_exports_to_onnx_and_litert_with_its_scores(quick_start):
    """The README's export commands and its ONNX Runtime / LiteRT snippet, run on command
    1's model: both files give the Keras model's scores on a demo WAV within 1e-4."""
    import keras
    import numpy as np
    import soundfile as sf

    import keras_astpe  # noqa: F401  (registers the model's classes for load_model)

    work, _ = quick_start
    commands = re.findall(r"^python (recipes/export\.py [^\n]*--format=(?:onnx|litert))$",
                          README, re.MULTILINE)
    assert len(commands) == 2
    for command in commands:
        result = run_recipe("export", *shlex.split(command)[1:], cwd=work)
        assert result.returncode == 0, result.stderr[-3000:]
    snippet = re.search(r"```python\n(import json, numpy as np, onnxruntime.*?)```", README,
                        re.DOTALL).group(1)
    snippet += "print('litert', runner(waveform=waveform[None])['scores'].tolist())\n"
    snippet += "print('onnx', scores.tolist())\n"
    result = subprocess.run([sys.executable, "-c", snippet], cwd=work, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = dict(line.split(" ", 1) for line in result.stdout.splitlines()[-2:])
    model = keras.saving.load_model(work / "saved_models/audioset-demo/time_alibi/model.keras")
    path = re.search(r'sf\.read\("([^"]+)"', snippet).group(1)
    waveform = sf.read(work / path, dtype="float32")[0][None]
    expected = keras.ops.convert_to_numpy(model(model.audio_converter(waveform)))
    for name in ("onnx", "litert"):
        np.testing.assert_allclose(json.loads(printed[name]), expected, atol=1e-4,
                                   err_msg=name)
