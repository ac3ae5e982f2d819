"""transformers' AST checkpoints convert to the same logits (on every backend)."""

import json
import os

import keras
import numpy as np
import pytest

from keras_astpe.conversion import convert_ast_checkpoint
from keras_astpe.conversion.transformers_ast import convert_transformers_ast
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter
from tests.conversion import ast_reference as reference

torch = pytest.importorskip("torch", reason="the reference AST runs in torch (test extra)")
transformers = pytest.importorskip("transformers", reason="transformers is a test extra")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved random AST (on-disk layout, model.safetensors) and its logits."""
    model = reference.small_hf_model()
    folder = tmp_path_factory.mktemp("hf") / "ast"
    model.save_pretrained(folder)
    features = reference.features()
    return folder, model, features, reference.hf_logits(model, features)


def _logits(model, features):
    return keras.ops.convert_to_numpy(model(features))


def test_same_logits_as_transformers(checkpoint):
    folder, _, features, expected = checkpoint
    model = convert_transformers_ast(folder, activation=None)
    np.testing.assert_allclose(_logits(model, features), expected, atol=1e-4)
    backbone = model.backbone
    assert backbone.grid_shape == (101, 12) and backbone.num_prefix_tokens == 2
    assert backbone.layer_norm_epsilon == 1e-12 and model.head_norm_epsilon == 1e-12
    assert model.class_names == tuple(f"class {i}" for i in range(reference.NUM_CLASSES))
    assert isinstance(model.audio_converter, KaldiFbankAudioConverter)
    assert model.audio_converter.config == KaldiFbankConfig()  # AudioSet's, 1024 frames


def test_in_memory_layout_in_pytorch_model_bin(checkpoint, tmp_path):
    """transformers 5's module names (`layers.{i}.attention.q_proj`), torch.save'd."""
    folder, hf_model, features, expected = checkpoint
    state = hf_model.state_dict()
    assert any(".attention.q_proj." in name for name in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with open(folder / "config.json") as f:
        (tmp_path / "config.json").write_text(f.read())
    model = convert_transformers_ast(tmp_path, activation=None)
    np.testing.assert_allclose(_logits(model, features), expected, atol=1e-4)


def test_saved_model_loads_and_scores_waveforms(checkpoint, tmp_path):
    folder, hf_model, _, _ = checkpoint
    model = convert_ast_checkpoint(folder)  # sigmoid scores, as a tagger
    model.save(tmp_path / "ast.keras")
    restored = keras.saving.load_model(tmp_path / "ast.keras", safe_mode=True)
    waveform = (0.2 * np.random.default_rng(0).standard_normal((1, 16000))).astype("float32")
    features = keras.ops.convert_to_numpy(restored.audio_converter(waveform))
    assert features.shape == (1, 1024, 128)
    expected = 1.0 / (1.0 + np.exp(-reference.hf_logits(hf_model, features)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(features)), expected,
                               atol=1e-4)


def test_frames_and_statistics_from_the_preprocessor(tmp_path):
    """Speech Commands: 128 frames although config.json says max_length 1024 (as
    transformers' own conversion left it), statistics of the preprocessor."""
    hf_model = reference.small_hf_model(seed=1, max_length=128)
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, max_length=1024)))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "ASTFeatureExtractor", "do_normalize": True,
        "max_length": 128, "mean": -6.845978, "std": 5.5654526, "num_mel_bins": 128,
        "sampling_rate": 16000}))
    model = convert_transformers_ast(tmp_path, activation=None)
    front_end = model.audio_converter.config
    assert (front_end.target_frames, front_end.mean, front_end.std) == (128, -6.845978,
                                                                         5.5654526)
    assert model.backbone.grid_shape == (12, 12)
    features = reference.features(frames=128)
    np.testing.assert_allclose(_logits(model, features),
                               reference.hf_logits(hf_model, features), atol=1e-4)


def test_bad_folders_are_clear_errors(checkpoint, tmp_path):
    folder, _, _, _ = checkpoint
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert_transformers_ast(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type is 'vit'"):
        convert_transformers_ast(tmp_path)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        convert_transformers_ast(tmp_path)
    with pytest.raises(ValueError, match=r"\['time_stride'\] apply to .pth files"):
        convert_ast_checkpoint(folder, time_stride=10)
    assert os.path.isdir(folder)
