"""recipes/plot_pe.py as a user runs it: a subprocess on a saved tiny model."""

from pathlib import Path

import keras
import pytest

from keras_astpe import build_model
from tests.recipes.running import run_recipe

pytestmark = pytest.mark.backend_agnostic



def _run(*args):
    return run_recipe("plot_pe", *args)


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
