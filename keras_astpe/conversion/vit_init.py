"""ImageNet initialization of an AST, as the original AST does it (`ast_models.py`).

    report = init_from_vit(model, "deit_base_distilled_patch16_384.pth")
    print(report.describe())

From an ImageNet ViT or DeiT on disk: a timm-style state dict (`.pth`, `.bin`,
`.safetensors`, `.npz`: `cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}`, `norm`,
optionally `dist_token`; DeiT's `{"model": ...}` files too) or a keras-hub `ViTBackbone`
preset folder (`config.json` + `model.weights.h5`). As AST does:

- the patch projection's three input channels are **summed** into one (AST's code:
  `torch.sum(weight, dim=1)`; an average would be the same kernel divided by 3), and its
  stride is the model's (AST: 10, not 16);
- the square grid of position embeddings (height = frequency, width = time, as AST lays
  the spectrogram out as an image) is cut to its middle rows/columns where the audio grid
  is smaller and bilinearly interpolated (half-pixel centres) where it is larger, time
  first, then frequency; [CLS]'s and the distillation token's positions are kept (folded
  into the tokens, see `vit_weights.assign_encoder`);
- the blocks and the final LayerNorm are loaded; the ImageNet heads are dropped.

A checkpoint without a distillation token (ViT, every keras-hub preset) initializes AST's
distillation token as a copy of [CLS] (with [CLS]'s position): a choice of this project,
as AST always starts from DeiT.
"""

import dataclasses
import json
import os
import re

import numpy as np

from keras_astpe.conversion.state_dicts import read_state_dict
from keras_astpe.conversion.vit_weights import ViTWeights, assign_encoder, from_timm_names

TIMM_HEAD_DIM = 64  # every timm ViT/DeiT; their state dicts do not store the head count


@dataclasses.dataclass(frozen=True)
class ViTInitReport:
    """What `init_from_vit` loaded: `source` and its `format`, the `loaded` parts of the
    model, how the position grid was adapted, and the checkpoint's parts `dropped`."""

    source: str
    format: str
    loaded: tuple
    positions: str
    distillation_token: str
    dropped: tuple

    def describe(self):
        lines = [f"Initialized from {self.source} ({self.format}):",
                 "  loaded: " + ", ".join(self.loaded),
                 f"  position embeddings: {self.positions}"]
        if self.distillation_token:
            lines.append(f"  distillation token: {self.distillation_token}")
        if self.dropped:
            lines.append("  dropped: " + ", ".join(self.dropped))
        return "\n".join(lines)


def resize_axis(table, size, axis):
    """Linear interpolation along `axis` to `size` entries with half-pixel centres
    (`torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` per axis)."""
    old = table.shape[axis]
    source = np.maximum((np.arange(size) + 0.5) * old / size - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(int), old - 1)
    upper = np.minimum(lower + 1, old - 1)
    shape = [1] * table.ndim
    shape[axis] = size
    weight = (source - lower).reshape(shape)
    return (np.take(table, lower, axis=axis) * (1.0 - weight)
            + np.take(table, upper, axis=axis) * weight)


def adapt_grid(grid, grid_shape):
    """AST's adaptation of ImageNet positions `[height, width, dim]` to `grid_shape`
    `(frequency, time)`: the width (time) is cut from the middle or interpolated, then the
    height (frequency). Returns the new grid and a description."""
    steps = []
    for axis, size, name in ((1, grid_shape[1], "time"), (0, grid_shape[0], "frequency")):
        old = grid.shape[axis]
        if size <= old:
            start = old // 2 - size // 2
            grid = np.take(grid, np.arange(start, start + size), axis=axis)
            steps.append(f"{name} {old} -> {size} (middle {start}..{start + size - 1})")
        else:
            grid = resize_axis(grid, size, axis)
            steps.append(f"{name} {old} -> {size} (bilinear)")
    return grid, ", ".join(steps)


def read_keras_hub_vit(folder):
    """`ViTWeights` and the head count of a keras-hub `ViTBackbone` preset folder."""
    import h5py

    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "model.weights.h5")
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: no {os.path.basename(path)} (a keras-hub "
                                    "ViTBackbone preset folder, as save_to_preset writes it)")
    with open(config_path, encoding="utf-8") as f:
        preset = json.load(f)
    if preset.get("class_name") != "ViTBackbone":
        raise ValueError(f"{config_path}: class_name is {preset.get('class_name')!r}, not "
                         "'ViTBackbone'")
    config = preset["config"]
    if not config.get("use_class_token", True):
        raise ValueError(f"{config_path}: a ViT without a class token cannot initialize AST")
    with h5py.File(weights_path, "r") as h5:
        arrays = {}
        h5.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                      if isinstance(item, h5py.Dataset) else None)

    def get(path):
        if path not in arrays:
            raise KeyError(f"{weights_path}: no dataset {path!r}")
        return arrays[path]

    embed = "layers/vi_t_patching_and_embedding/"
    encoder = "layers/vi_t_encoder/"
    block_names = {re.match(r"layers/vi_t_encoder/encoder_layers/([^/]+)/", name).group(1)
                   for name in arrays if name.startswith(encoder + "encoder_layers/")}

    def block_index(name):
        suffix = name[len("vi_t_encoder_block"):]
        return int(suffix[1:]) if suffix else 0

    blocks = []
    for name in sorted(block_names, key=block_index):
        prefix = f"{encoder}encoder_layers/{name}/"

        def dense(path, prefix=prefix):
            kernel = get(prefix + path + "/vars/0")
            bias = arrays.get(prefix + path + "/vars/1")
            return kernel.reshape(kernel.shape[0], -1).T, None if bias is None else bias.ravel()

        block = {}
        for part, path in (("q", "mha/query_dense"), ("k", "mha/key_dense"),
                           ("v", "mha/value_dense")):
            block[f"attn.{part}.weight"], block[f"attn.{part}.bias"] = dense(path)
        kernel = get(prefix + "mha/output_dense/vars/0")
        block["attn.proj.weight"] = kernel.reshape(-1, kernel.shape[-1]).T
        block["attn.proj.bias"] = arrays.get(prefix + "mha/output_dense/vars/1")
        block["mlp.fc1.weight"], block["mlp.fc1.bias"] = dense("mlp/dense_1")
        block["mlp.fc2.weight"], block["mlp.fc2.bias"] = dense("mlp/dense_2")
        for norm, timm in (("layer_norm_1", "norm1"), ("layer_norm_2", "norm2")):
            block[f"{timm}.weight"] = get(prefix + norm + "/vars/0")
            block[f"{timm}.bias"] = get(prefix + norm + "/vars/1")
        blocks.append(block)
    positions = get(embed + "position_embedding/vars/0")
    side = int(round((positions.shape[0] - 1) ** 0.5))
    kernel = get(embed + "patch_embedding/vars/0")  # [height, width, channels, dim]
    bias = arrays.get(embed + "patch_embedding/vars/1")
    weights = ViTWeights(
        patch_kernel=kernel.transpose(3, 2, 0, 1),
        patch_bias=np.zeros(kernel.shape[-1], np.float32) if bias is None else bias,
        prefix_tokens=get(embed + "vars/0").reshape(1, -1),
        prefix_positions=positions[:1],
        grid_positions=positions[1:].reshape(side, side, -1),
        blocks=blocks,
        final_norm=(get(encoder + "layer_norm/vars/0"), get(encoder + "layer_norm/vars/1")),
        source=folder,
    )
    return weights, int(config["num_heads"])


def read_vit(path):
    """`(ViTWeights, num_heads or None, format, dropped names)` of a checkpoint on disk."""
    path = os.fspath(path)
    if os.path.isdir(path):
        weights, heads = read_keras_hub_vit(path)
        return weights, heads, "keras-hub ViTBackbone preset", ()
    state = read_state_dict(path)
    prefix = "module." if "module.cls_token" in state else ""
    dropped = tuple(sorted(name for name in state
                           if name[len(prefix):].startswith(("head.", "head_dist.", "fc_norm",
                                                             "pre_logits"))))
    weights = from_timm_names(state, path, prefix=prefix)
    return weights, None, "timm state dict", dropped


def init_from_vit(model, path, num_heads=None):
    """Initializes `model` (an `ASTClassifier` or `ASTBackbone` of AST's architecture)
    from an ImageNet ViT/DeiT checkpoint at `path`; see the module docstring.

    The model keeps its head. `num_heads` is the checkpoint's head count, when it is not
    the keras-hub preset's or, for a timm state dict, width / 64. Returns a
    `ViTInitReport` of what was loaded.
    """
    backbone = getattr(model, "backbone", model)
    weights, source_heads, source_format, dropped = read_vit(path)
    source_heads = num_heads or source_heads or weights.hidden_dim // TIMM_HEAD_DIM
    if source_heads != backbone.num_heads:
        raise ValueError(f"{path}: {source_heads} attention heads, the model has "
                         f"{backbone.num_heads}")
    if weights.patch_size != backbone.patch_size:
        raise ValueError(f"{path}: {weights.patch_size[0]}x{weights.patch_size[1]} patches, "
                         f"the model has {backbone.patch_size[0]}x{backbone.patch_size[1]}")
    if backbone.embedding_norm is not None:
        raise ValueError(f"{path}: a ViT has no LayerNorm after the embeddings; build the "
                         "model with embedding_norm=False (the `ast` preset)")
    if backbone.position_embedding is None or backbone.position_embedding.frequency_only:
        raise ValueError(f"{path}: the model's positional encoding "
                         f"({backbone.position_encoding}) has no position grid for ViT's")
    grid_shape = backbone.grid_shape[::-1]  # (frequency, time)
    grid, positions = adapt_grid(weights.grid_positions, grid_shape)
    tokens, token_positions = weights.prefix_tokens, weights.prefix_positions
    distillation = ""
    if backbone.distillation_token is not None:
        if len(tokens) == 1:
            tokens = np.concatenate([tokens, tokens])
            token_positions = np.concatenate([token_positions, token_positions])
            distillation = "a copy of [CLS] (the checkpoint has none)"
        else:
            distillation = "from the checkpoint"
    elif len(tokens) == 2:
        tokens, token_positions = tokens[:1], token_positions[:1]
        dropped += ("dist_token",)
    adapted = dataclasses.replace(
        weights,
        patch_kernel=weights.patch_kernel.sum(axis=1, keepdims=True),
        prefix_tokens=tokens, prefix_positions=token_positions, grid_positions=grid)
    assign_encoder(backbone, adapted)
    channels = weights.patch_kernel.shape[1]
    loaded = (f"patch projection ({channels} input channels summed)",
              "[CLS] token" + (" and distillation token" if distillation else ""),
              f"position embeddings ({weights.grid_positions.shape[0]} x "
              f"{weights.grid_positions.shape[1]} -> {grid_shape[0]} x {grid_shape[1]})",
              f"{len(weights.blocks)} blocks", "final LayerNorm")
    return ViTInitReport(source=os.fspath(path), format=source_format, loaded=loaded,
                         positions=positions, distillation_token=distillation,
                         dropped=tuple(dropped))
