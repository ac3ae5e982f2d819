"""recipes/tune.py as a user runs it: a subprocess on the generated tiny demo data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_agnostic

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tune.py"


def _run(cwd, *args):
    """The recipe in `cwd` (where it writes demo_data/), as `python recipes/tune.py`."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(RECIPE), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_tune_on_generated_demo_data(tmp_path):
    out = tmp_path / "tune"
    result = _run(tmp_path, f"--output_dir={out}", "--demo_size=tiny", "--max_trials=1",
                  "--epochs=1", "--steps_per_epoch=1", "--batch_size=2", "--pe_kinds=absolute",
                  "--num_layers_range=1,1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = json.loads((out / "trials.json").read_text())
    assert [row["status"] for row in trials["trials"]] == ["COMPLETED"]
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["hyperparameters"]["position_encoding"] == "absolute"
    assert best["train_split"] == "balanced_train" and best["eval_split"] == "eval"
    assert os.path.isfile(best["model"])
    assert (tmp_path / "demo_data" / "tfrecords" / "audioset").is_dir()
    assert (out / "normalization_stats.json").exists()
    assert "Best trial" in result.stdout
