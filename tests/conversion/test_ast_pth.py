"""The original AST's `.pth` state dicts convert to the original's logits."""

import keras
import numpy as np
import pytest

from keras_astpe.conversion import convert_ast_checkpoint
from keras_astpe.conversion.ast_pth import convert_ast_pth, infer_geometry
from tests.conversion import ast_reference as reference

torch = pytest.importorskip("torch", reason="the original AST runs in torch (test extra)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("transformers", reason="the random AST is built with transformers")
    state = reference.original_state_dict(reference.small_hf_model(seed=2))
    path = tmp_path_factory.mktemp("pth") / "audioset_10_10_0.4593.pth"
    torch.save(state, path)
    features = reference.features()
    return path, state, features, reference.original_logits(state, features)


def test_same_logits_as_the_original(checkpoint):
    path, _, features, expected = checkpoint
    model = convert_ast_pth(path, activation=None)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(features)), expected,
                               atol=1e-4)
    assert model.backbone.layer_norm_epsilon == 1e-6 and model.head_norm_epsilon == 1e-5
    assert model.backbone.num_heads == reference.HEADS  # width / 64
    config = model.audio_converter.config
    assert (config.target_frames, config.mean, config.std) == (1024, -4.2677393, 4.5689974)


def test_without_data_parallel_prefix_and_with_given_geometry(checkpoint, tmp_path):
    _, state, features, expected = checkpoint
    torch.save({key[len("module."):]: value for key, value in state.items()},
               tmp_path / "plain.pth")
    model = convert_ast_pth(tmp_path / "plain.pth", frequency_stride=10, time_stride=10,
                            num_frames=1024, mean=-6.6268077, std=5.358466, activation=None)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(features)), expected,
                               atol=1e-4)
    assert model.audio_converter.config.mean == -6.6268077


def test_class_names_default_to_audioset_for_527_outputs(checkpoint):
    path, _, _, _ = checkpoint
    assert convert_ast_checkpoint(path).class_names is None  # 5 outputs
    names = [f"n{i}" for i in range(reference.NUM_CLASSES)]
    assert convert_ast_checkpoint(path, class_names=names).class_names == tuple(names)
    with pytest.raises(ValueError, match="3 class names for the 5 outputs"):
        convert_ast_checkpoint(path, class_names=names[:3])


@pytest.mark.parametrize("num_patches, strides, frames", [
    (1212, 10, 1024), (850, 12, 1024), (657, 14, 1024), (512, 16, 1024),  # AudioSet
    (600, 10, 512),  # ESC-50
    (144, 10, 128),  # Speech Commands
])
def test_released_settings_are_recovered_from_the_position_table(num_patches, strides, frames):
    geometry = infer_geometry(num_patches, "x.pth")
    assert (geometry.frequency_stride, geometry.time_stride, geometry.num_frames) == (
        strides, strides, frames)


def test_unknown_settings_need_flags():
    with pytest.raises(ValueError, match="1000 patch positions and no released setting fits"):
        infer_geometry(1000, "x.pth")
    geometry = infer_geometry(12 * 20, "x.pth", num_frames=206)
    assert (geometry.frequency_stride, geometry.time_stride) == (10, 10)
    with pytest.raises(ValueError, match="with time_stride=12"):
        infer_geometry(1212, "x.pth", time_stride=12)


def test_not_an_ast_state_dict(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not a state dict of the original AST"):
        convert_ast_pth(tmp_path / "other.pth")
