"""recipes/plot_pe.py as a user runs it: a subprocess on a saved tiny model."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_astpe import build_model

pytestmark = pytest.mark.backend_agnostic

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "plot_pe.py"


def _run(*args):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(RECIPE), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _save(pe, path):
    model = build_model(pe, preset="ast-pe-tiny", num_classes=3, num_frames=128)
    keras.saving.save_model(model, path)
    return path


def test_plot_pe_writes_and_prints_pngs(tmp_path):
    model = _save("learned_relative", tmp_path / "relative.keras")
    result = _run(f"--model={model}", f"--output_dir={tmp_path / 'figures'}", "--block=-1")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.split()
    assert printed == [str(tmp_path / "figures" / "position_similarity_block_01.png")]
    assert Path(printed[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_pe_fails_clearly_without_position_tables(tmp_path):
    model = _save("conditional", tmp_path / "conditional.keras")
    result = _run(f"--model={model}", f"--output_dir={tmp_path / 'figures'}")
    assert result.returncode == 1
    assert "'conditional' has no position embeddings to plot" in result.stderr
    assert not (tmp_path / "figures").exists()
