"""The README's command 1 as a user runs it, in an empty folder: it ends with the README's
block, word for word, with its scores (mAP, AUC, d') within a tolerance."""

import re
import shlex

import pytest

from tests.recipes.running import ROOT, run_recipe

pytestmark = pytest.mark.backend_agnostic

SCORE = re.compile(r"(mAP|AUC|d') (\d+\.\d+)")
# Another CPU's float rounding (oneDNN's kernels differ between instruction sets) changes
# the 800 steps' trajectory a little; a broken recipe is far off (chance mAP: 0.17).
TOLERANCE = {"mAP": 0.03, "AUC": 0.03, "d'": 0.15}


def _readme_command_and_block():
    text = (ROOT / "README.md").read_text()
    command = re.search(r"pip install -e \. && python (recipes/train_audioset\.py[^\n]*)", text)
    block = text.split("and ends with:\n\n```\n", 1)[1].split("```", 1)[0]
    return shlex.split(command.group(1))[1:], block.strip().splitlines()


def _scores(line):
    """{name: value} of the scores on a result line (`mAP 0.714`, `d' 1.490`, ...)."""
    return {name: float(value) for name, value in SCORE.findall(line)}


def test_the_readme_quick_start_ends_as_the_readme_shows(tmp_path):
    arguments, expected = _readme_command_and_block()
    result = run_recipe("train_audioset", *arguments, cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout.splitlines()
    start = next(i for i, line in enumerate(output) if line.startswith(expected[0][:20]))
    printed = output[start:start + len(expected)]
    for want, got in zip(expected, printed, strict=True):
        assert SCORE.sub(r"\1 #", got) == SCORE.sub(r"\1 #", want), (got, want)
        want_scores, got_scores = _scores(want), _scores(got)
        for name, value in want_scores.items():
            assert abs(got_scores[name] - value) <= TOLERANCE[name], (name, got, want)
    assert (tmp_path / "saved_models/audioset-demo/time_alibi/model.keras").is_file()
