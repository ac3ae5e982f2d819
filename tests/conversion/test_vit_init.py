"""ImageNet ViT/DeiT initialization of an AST: summed patch kernel, positions adapted to
the audio grid as AST does, checked against numpy."""

import json

import h5py
import keras
import numpy as np
import pytest

from keras_astpe import ASTBackbone, ASTClassifier, get_preset
from keras_astpe.conversion import init_from_vit
from tests.conversion import ast_reference as reference

WIDTH, HEADS, BLOCKS, FF, SIDE = 128, 2, 2, 96, 24


def _model(num_frames=1024, **options):
    config = dict(get_preset("ast"), hidden_dim=WIDTH, num_layers=BLOCKS, num_heads=HEADS,
                  intermediate_dim=FF, num_frames=num_frames, **options)
    return ASTClassifier(ASTBackbone("absolute", **config), 3, head_norm=True)


def _deit_state(distilled=True, seed=0):
    return reference.deit_state(WIDTH, BLOCKS, FF, distilled=distilled, seed=seed, side=SIDE)


def _torch_bilinear_1d(values, size):
    """`F.interpolate(mode="bilinear", align_corners=False)` along axis 0, one output at a
    time, from its definition (source = (i + 0.5) * in / out - 0.5, clamped at 0)."""
    old = values.shape[0]
    out = []
    for i in range(size):
        source = max((i + 0.5) * old / size - 0.5, 0.0)
        low = min(int(np.floor(source)), old - 1)
        high = min(low + 1, old - 1)
        out.append(values[low] * (1 - (source - low)) + values[high] * (source - low))
    return np.stack(out)


def _ast_positions(pos_embed, prefix, f_dim, t_dim):
    """AST's `ast_models.py`: grid [768, 24, 24] (rows frequency, columns time); time cut
    `[12 - t_dim // 2, +t_dim)` or bilinear, then frequency rows cut or bilinear."""
    grid = pos_embed[0, prefix:].reshape(SIDE, SIDE, WIDTH)
    if t_dim <= SIDE:
        grid = grid[:, SIDE // 2 - t_dim // 2:SIDE // 2 - t_dim // 2 + t_dim]
    else:
        grid = _torch_bilinear_1d(grid.transpose(1, 0, 2), t_dim).transpose(1, 0, 2)
    if f_dim <= SIDE:
        grid = grid[SIDE // 2 - f_dim // 2:SIDE // 2 - f_dim // 2 + f_dim]
    else:
        grid = _torch_bilinear_1d(grid, f_dim)
    return grid  # [frequency, time, dim]


def _value(variable):
    return keras.ops.convert_to_numpy(variable)


@pytest.mark.parametrize("num_frames, suffix", [(1024, ".npz"), (128, ".pth")])
def test_deit_state_dict_initializes_an_ast(num_frames, suffix, tmp_path):
    """1024 frames: time interpolated 24 -> 101; 128 frames: time cut to the middle 12."""
    state = _deit_state()
    path = tmp_path / f"deit{suffix}"
    if suffix == ".pth":
        torch = pytest.importorskip("torch")
        torch.save({"model": {k: torch.tensor(v) for k, v in state.items()}}, path)
    else:
        np.savez(path, **state)
    model = _model(num_frames)
    head_before = _value(model.head.kernel)
    report = init_from_vit(model, path)
    backbone = model.backbone
    t_dim, f_dim = backbone.grid_shape

    kernel = _value(backbone.patch_embedding.projection.kernel)  # [time, freq, 1, dim]
    summed = state["patch_embed.proj.weight"].sum(axis=1)  # AST sums the RGB channels
    np.testing.assert_allclose(kernel[:, :, 0], summed.transpose(2, 1, 0), rtol=1e-6)
    expected = _ast_positions(state["pos_embed"], 2, f_dim, t_dim)
    np.testing.assert_allclose(_value(backbone.position_embedding.embeddings),
                               expected.transpose(1, 0, 2), rtol=1e-5, atol=1e-5)
    pos = state["pos_embed"][0]
    np.testing.assert_allclose(_value(backbone.class_token.token)[0, 0],
                               state["cls_token"][0, 0] + pos[0], rtol=1e-6)
    np.testing.assert_allclose(_value(backbone.distillation_token.token)[0, 0],
                               state["dist_token"][0, 0] + pos[1], rtol=1e-6)
    query = _value(backbone.blocks[1].attention.query_dense.kernel)
    np.testing.assert_array_equal(query, state["blocks.1.attn.qkv.weight"][:WIDTH].T.reshape(
        WIDTH, HEADS, WIDTH // HEADS))
    np.testing.assert_array_equal(_value(backbone.final_norm.gamma), state["norm.weight"])
    np.testing.assert_array_equal(_value(model.head.kernel), head_before)  # head kept
    assert report.dropped == ("head.bias", "head.weight", "head_dist.bias", "head_dist.weight")
    assert report.distillation_token == "from the checkpoint"
    assert ("bilinear" in report.positions) == (num_frames == 1024)
    assert "frequency 24 -> 12 (middle 6..17)" in report.positions


def _keras_hub_preset(folder, state):
    """A keras-hub `ViTBackbone` preset folder (config.json, model.weights.h5 with the
    dataset paths keras-hub 0.32 writes) holding the ViT of `state`."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "module": "keras_hub.src.models.vit.vit_backbone", "class_name": "ViTBackbone",
        "config": {"image_shape": [384, 384, 3], "patch_size": [16, 16],
                   "num_layers": BLOCKS, "num_heads": HEADS, "hidden_dim": WIDTH,
                   "mlp_dim": FF, "layer_norm_epsilon": 1e-6, "use_class_token": True},
        "registered_name": "keras_hub>ViTBackbone"}))
    embed, encoder = "layers/vi_t_patching_and_embedding", "layers/vi_t_encoder"
    head_dim = WIDTH // HEADS
    with h5py.File(folder / "model.weights.h5", "w") as h5:
        h5[f"{embed}/vars/0"] = state["cls_token"]
        h5[f"{embed}/patch_embedding/vars/0"] = state["patch_embed.proj.weight"].transpose(
            2, 3, 1, 0)
        h5[f"{embed}/patch_embedding/vars/1"] = state["patch_embed.proj.bias"]
        h5[f"{embed}/position_embedding/vars/0"] = state["pos_embed"][0]
        h5[f"{encoder}/layer_norm/vars/0"] = state["norm.weight"]
        h5[f"{encoder}/layer_norm/vars/1"] = state["norm.bias"]
        for i in range(BLOCKS):
            block = f"{encoder}/encoder_layers/vi_t_encoder_block" + (f"_{i}" if i else "")
            qkv_w, qkv_b = state[f"blocks.{i}.attn.qkv.weight"], state[f"blocks.{i}.attn.qkv.bias"]
            for j, name in enumerate(("query", "key", "value")):
                rows = slice(j * WIDTH, (j + 1) * WIDTH)
                h5[f"{block}/mha/{name}_dense/vars/0"] = qkv_w[rows].T.reshape(
                    WIDTH, HEADS, head_dim)
                h5[f"{block}/mha/{name}_dense/vars/1"] = qkv_b[rows].reshape(HEADS, head_dim)
            h5[f"{block}/mha/output_dense/vars/0"] = state[
                f"blocks.{i}.attn.proj.weight"].T.reshape(HEADS, head_dim, WIDTH)
            h5[f"{block}/mha/output_dense/vars/1"] = state[f"blocks.{i}.attn.proj.bias"]
            for norm, timm in (("layer_norm_1", "norm1"), ("layer_norm_2", "norm2")):
                h5[f"{block}/{norm}/vars/0"] = state[f"blocks.{i}.{timm}.weight"]
                h5[f"{block}/{norm}/vars/1"] = state[f"blocks.{i}.{timm}.bias"]
            for dense, timm in (("dense_1", "mlp.fc1"), ("dense_2", "mlp.fc2")):
                h5[f"{block}/mlp/{dense}/vars/0"] = state[f"blocks.{i}.{timm}.weight"].T
                h5[f"{block}/mlp/{dense}/vars/1"] = state[f"blocks.{i}.{timm}.bias"]
    return folder


def test_keras_hub_preset_initializes_like_the_same_timm_vit(tmp_path):
    """A ViT without distillation token: AST's distillation token starts as [CLS]."""
    state = _deit_state(distilled=False, seed=1)
    np.savez(tmp_path / "vit.npz", **state)
    from_timm, from_keras_hub = _model(), _model()
    init_from_vit(from_timm, tmp_path / "vit.npz")
    report = init_from_vit(from_keras_hub, _keras_hub_preset(tmp_path / "preset", state))
    assert report.format == "keras-hub ViTBackbone preset"
    assert report.distillation_token == "a copy of [CLS] (the checkpoint has none)"
    for a, b in zip(from_timm.backbone.weights, from_keras_hub.backbone.weights, strict=True):
        np.testing.assert_allclose(_value(a), _value(b), rtol=1e-6, err_msg=a.path)
    backbone = from_keras_hub.backbone
    np.testing.assert_array_equal(_value(backbone.distillation_token.token),
                                  _value(backbone.class_token.token))
    expected = _ast_positions(state["pos_embed"], 1, 12, 101)
    np.testing.assert_allclose(_value(backbone.position_embedding.embeddings),
                               expected.transpose(1, 0, 2), rtol=1e-5, atol=1e-5)


def test_models_that_do_not_fit_are_clear_errors(tmp_path):
    np.savez(tmp_path / "vit.npz", **_deit_state())
    with pytest.raises(ValueError, match="embedding_norm=False"):
        init_from_vit(_model(embedding_norm=True), tmp_path / "vit.npz")
    with pytest.raises(ValueError, match="2 attention heads, the model has 4"):
        init_from_vit(_model().backbone.__class__(
            "absolute", **dict(get_preset("ast"), hidden_dim=WIDTH, num_layers=BLOCKS,
                               num_heads=4, intermediate_dim=FF)), tmp_path / "vit.npz")
    with pytest.raises(ValueError, match="no position grid"):
        init_from_vit(ASTBackbone("alibi_2d", **dict(
            get_preset("ast"), hidden_dim=WIDTH, num_layers=BLOCKS, num_heads=HEADS,
            intermediate_dim=FF)), tmp_path / "vit.npz")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        init_from_vit(_model(), tmp_path)
