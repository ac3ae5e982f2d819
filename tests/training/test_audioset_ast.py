"""The original AST through the training recipes: AST's front end (no statistics pass),
ImageNet init (`--init`), the TF Serving export of the run, and ESC-50 fine-tuning of the
result, on a tiny AST-shaped preset and the tiny demo data."""

import json
import os

import keras
import numpy as np
import pytest

from keras_astpe.models import KaldiFbankAudioConverter, presets
from keras_astpe.training import AudioSetConfig, ESC50Config, evaluate_esc50, train_audioset
from tests.conversion import ast_reference
from tfrecords_tools.demo import prepare_demo_data

pytestmark = [pytest.mark.backend_agnostic, pytest.mark.slow]

WIDTH, BLOCKS, HEADS, FF = 128, 1, 2, 64  # timm's 64-wide heads: 2 heads of 128


@pytest.fixture
def tiny_ast_preset(monkeypatch):
    ast = presets.PRESETS["ast"]
    backbone = dict(ast.backbone, hidden_dim=WIDTH, num_layers=BLOCKS, num_heads=HEADS,
                    intermediate_dim=FF, num_frames=200)
    monkeypatch.setitem(presets.PRESETS, "ast-test",
                        presets.Preset(backbone, head=ast.head, front_end=ast.front_end))
    return "ast-test"


def _deit(path):
    """A random timm DeiT state dict saved as .npz."""
    state = ast_reference.deit_state(WIDTH, BLOCKS, FF, scale=0.02)
    np.savez(path, **state)
    return state


def test_ast_trains_from_imagenet_exports_and_fine_tunes(tiny_ast_preset, tmp_path, capsys):
    demo = tmp_path / "demo"
    audioset = prepare_demo_data("audioset", root=str(demo), size="tiny", progress=False)
    state = _deit(tmp_path / "deit.npz")
    config = AudioSetConfig.named(
        pe="absolute", data_dir=audioset, preset=tiny_ast_preset, batch_size=4, train_steps=2,
        checkpoint_every=1, swa_last=2, warmup_steps=1, init=str(tmp_path / "deit.npz"),
        output_dir=str(tmp_path / "run"))
    results = train_audioset(config, verbose=0)
    printed = capsys.readouterr().out
    assert "Computing normalization statistics" not in printed  # AST's are fixed
    assert "deit.npz" in printed  # what the ImageNet init loaded
    assert results["normalization"] == {"mean": pytest.approx(-4.2677393),
                                        "std": pytest.approx(4.5689974)}
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert isinstance(model.audio_converter, KaldiFbankAudioConverter)
    assert model.head_norm is not None and model.backbone.distillation_token
    # Two steps at a small learning rate move the ImageNet kernel only a little.
    kernel = keras.ops.convert_to_numpy(model.backbone.patch_embedding.projection.kernel)
    summed = state["patch_embed.proj.weight"].sum(axis=1).transpose(2, 1, 0)
    assert np.abs(kernel[:, :, 0] - summed).max() < 0.05 * np.abs(summed).max()
    export = tmp_path / "run" / "saved_model" / "1"
    assert results["saved_model"] == str(export)
    assert (export / "saved_model.pb").is_file()
    assert (export / "assets" / "class_names.txt").read_text().splitlines()[0] == "Sine wave"

    esc50 = prepare_demo_data("esc50", root=str(demo), size="tiny", progress=False)
    results = evaluate_esc50(ESC50Config.named(
        init=str(tmp_path / "run" / "model.keras"), data_dir=esc50, folds=(1,),
        batch_size=4, head_epochs=1, finetune_epochs=1, output_dir=str(tmp_path / "esc50")),
        verbose=0)
    assert 0.0 <= results["accuracy_mean"] <= 1.0
    assert results["normalization"]["mean"] == pytest.approx(-4.2677393)
    saved = json.loads((tmp_path / "esc50" / "results.json").read_text())
    assert saved["config"]["clip_samples"] == 80000 and os.path.isdir(tmp_path / "esc50")
