"""ViT-family encoders (ViT, DeiT, AST) in one layout, and how they fill a keras-astpe model.

Each source format (transformers' AST, the original AST's `.pth`, timm and keras-hub ViTs)
is read into `ViTWeights`, named as timm names a ViT (`patch_embed.proj`, `blocks.{i}.attn`,
`norm`), with numpy arrays in PyTorch's layout: `Linear` weights `[out, in]`, the patch
projection `[dim, channels, height, width]`. For AST, height is frequency and width is time,
and its position table is frequency-major (token `f * T + t`). `assign_encoder` writes them
into an `ASTBackbone` (time-major grid `[T, F, dim]`, Keras kernels `[in, out]`), and
`assign_head` into an `ASTClassifier`'s head.
"""

import dataclasses

import numpy as np

# The arrays of one encoder block, as timm names them; q/k/v split (timm's `qkv` rows are
# [q; k; v]). A block without biases (the paper's code) has None there.
BLOCK_ARRAYS = (
    "norm1.weight", "norm1.bias",
    "attn.q.weight", "attn.q.bias", "attn.k.weight", "attn.k.bias",
    "attn.v.weight", "attn.v.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)


@dataclasses.dataclass
class ViTWeights:
    """The arrays of a ViT-family encoder (and its head, if any).

    Attributes:
        patch_kernel, patch_bias: patch projection `[dim, channels, height, width]`, `[dim]`.
        prefix_tokens: `[P, dim]`: [CLS], then the distillation token if any.
        prefix_positions: `[P, dim]`: the positions added to them.
        grid_positions: `[height, width, dim]` positions of the patches.
        blocks: one `{name in BLOCK_ARRAYS: array or None}` per block.
        final_norm: `(gamma, beta)` after the last block, or None.
        head_norm: `(gamma, beta)` of the head LayerNorm, or None.
        head: `(weight [classes, dim], bias)`, or None.
        source: where the arrays come from, for error messages.
    """

    patch_kernel: np.ndarray
    patch_bias: np.ndarray
    prefix_tokens: np.ndarray
    prefix_positions: np.ndarray
    grid_positions: np.ndarray
    blocks: list
    final_norm: tuple | None
    head_norm: tuple | None = None
    head: tuple | None = None
    source: str = ""

    @property
    def hidden_dim(self):
        return self.patch_kernel.shape[0]

    @property
    def intermediate_dim(self):
        return self.blocks[0]["mlp.fc1.weight"].shape[0]

    @property
    def patch_size(self):
        """`(height, width)` of a patch (AST: frequency, time)."""
        return tuple(self.patch_kernel.shape[2:])


def _take(state, name, source):
    if name not in state:
        raise KeyError(f"{source}: no tensor {name!r} (found e.g. {sorted(state)[:5]})")
    return state[name]


def from_timm_names(state, source, *, prefix="", grid_shape=None):
    """`ViTWeights` from tensors named as timm names a ViT/DeiT (and AST's `.pth` does
    after `module.v.`), with `prefix` before every name.

    The position table holds the prefix tokens' positions first (one per token:
    `cls_token`, and `dist_token` when present) then the grid, whose `(height, width)`
    is `grid_shape` (default: square). `qkv` is split into q, k, v; a state that already
    holds `attn.q/k/v` (transformers' layout, renamed) is taken as is.
    """
    def get(name):
        return _take(state, prefix + name, source)

    tokens = [get("cls_token").reshape(-1)]
    if prefix + "dist_token" in state:
        tokens.append(get("dist_token").reshape(-1))
    positions = get("pos_embed").reshape(-1, tokens[0].shape[0])
    num_prefix = len(tokens)
    num_patches = positions.shape[0] - num_prefix
    if grid_shape is None:
        side = int(round(num_patches ** 0.5))
        if side * side != num_patches:
            raise ValueError(f"{source}: {num_patches} patch positions do not make a square "
                             "grid; give the grid shape")
        grid_shape = (side, side)
    if grid_shape[0] * grid_shape[1] != num_patches:
        raise ValueError(f"{source}: {num_patches} patch positions, not a "
                         f"{grid_shape[0]} x {grid_shape[1]} grid")
    block_indices = sorted({int(name[len(prefix) + len("blocks."):].split(".")[0])
                            for name in state if name.startswith(prefix + "blocks.")})
    if block_indices != list(range(len(block_indices))) or not block_indices:
        raise ValueError(f"{source}: expected blocks 0..n-1, found {block_indices}")
    blocks = []
    for i in block_indices:
        def block(name, i=i):
            return state.get(f"{prefix}blocks.{i}.{name}")

        arrays = {name: block(name) for name in BLOCK_ARRAYS}
        qkv_weight, qkv_bias = block("attn.qkv.weight"), block("attn.qkv.bias")
        if qkv_weight is not None:
            for part, rows in zip("qkv", np.split(qkv_weight, 3), strict=True):
                arrays[f"attn.{part}.weight"] = rows
            if qkv_bias is not None:
                for part, rows in zip("qkv", np.split(qkv_bias, 3), strict=True):
                    arrays[f"attn.{part}.bias"] = rows
        for name in ("norm1.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight",
                     "attn.proj.weight", "norm2.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
            if arrays[name] is None:
                raise KeyError(f"{source}: no tensor {prefix}blocks.{i}.{name}")
        blocks.append(arrays)
    final_norm = None
    if prefix + "norm.weight" in state:
        final_norm = (get("norm.weight"), get("norm.bias"))
    return ViTWeights(
        patch_kernel=get("patch_embed.proj.weight"),
        patch_bias=get("patch_embed.proj.bias"),
        prefix_tokens=np.stack(tokens),
        prefix_positions=positions[:num_prefix],
        grid_positions=positions[num_prefix:].reshape(*grid_shape, -1),
        blocks=blocks,
        final_norm=final_norm,
        source=source,
    )


def _assign(variable, value, what):
    value = np.asarray(value, np.float32)
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"{what}: shape {value.shape} does not fit the model's "
                         f"{variable.path} {tuple(variable.shape)}")
    variable.assign(value)


def assign_block(block, arrays, source, index):
    """Writes the arrays of one block (`BLOCK_ARRAYS`) into a `TransformerEncoderBlock`."""
    what = f"{source} block {index}"
    attention = block.attention
    heads, head_dim = attention.num_heads, attention.key_dim
    dim = heads * head_dim
    _assign(block.attention_norm.gamma, arrays["norm1.weight"], what)
    _assign(block.attention_norm.beta, arrays["norm1.bias"], what)
    for part, dense in zip("qkv", (attention.query_dense, attention.key_dense,
                                   attention.value_dense), strict=True):
        weight = arrays[f"attn.{part}.weight"]
        _assign(dense.kernel, weight.T.reshape(-1, heads, head_dim), what)
        _assign_bias(dense, arrays[f"attn.{part}.bias"], (heads, head_dim), what)
    _assign(attention.output_dense.kernel,
            arrays["attn.proj.weight"].T.reshape(heads, head_dim, -1), what)
    _assign_bias(attention.output_dense, arrays["attn.proj.bias"], (dim,), what)
    _assign(block.feedforward_norm.gamma, arrays["norm2.weight"], what)
    _assign(block.feedforward_norm.beta, arrays["norm2.bias"], what)
    for name, dense in (("mlp.fc1", block.feedforward_intermediate),
                        ("mlp.fc2", block.feedforward_output)):
        _assign(dense.kernel, arrays[f"{name}.weight"].T, what)
        _assign_bias(dense, arrays[f"{name}.bias"], (dense.kernel.shape[-1],), what)


def _assign_bias(dense, bias, shape, what):
    """A missing bias is zero where the model has one; a model without biases needs zeros."""
    if dense.bias is not None:
        _assign(dense.bias, np.zeros(shape) if bias is None else np.reshape(bias, shape), what)
    elif bias is not None and np.any(bias):
        raise ValueError(f"{what}: the source has biases in {dense.path}, the model none")


def assign_encoder(backbone, weights):
    """Writes `weights` into an `ASTBackbone` whose sizes match them.

    The grid positions `[frequency, time, dim]` become the time-major table `[time,
    frequency, dim]`; the prefix tokens' positions are folded into the tokens (exact when
    no LayerNorm sits between the embedding and the first block, as in AST).
    """
    source = weights.source
    kernel = weights.patch_kernel.transpose(3, 2, 1, 0)  # [time, freq, channels, dim]
    _assign(backbone.patch_embedding.projection.kernel, kernel, f"{source} patch projection")
    _assign(backbone.patch_embedding.projection.bias, weights.patch_bias,
            f"{source} patch projection")
    if backbone.position_embedding is None:
        raise ValueError(f"{source}: the model has no absolute position embeddings")
    _assign(backbone.position_embedding.embeddings, weights.grid_positions.transpose(1, 0, 2),
            f"{source} position embeddings")
    tokens = weights.prefix_tokens + weights.prefix_positions
    if len(tokens) != backbone.num_prefix_tokens:
        raise ValueError(f"{source}: {len(tokens)} prefix token(s), the model has "
                         f"{backbone.num_prefix_tokens}")
    _assign(backbone.class_token.token, tokens[0][None, None], f"{source} [CLS] token")
    if backbone.distillation_token is not None:
        _assign(backbone.distillation_token.token, tokens[1][None, None],
                f"{source} distillation token")
    if len(weights.blocks) != len(backbone.blocks):
        raise ValueError(f"{source}: {len(weights.blocks)} blocks, the model has "
                         f"{len(backbone.blocks)}")
    for index, (block, arrays) in enumerate(zip(backbone.blocks, weights.blocks,
                                                strict=True)):
        assign_block(block, arrays, source, index)
    if (weights.final_norm is None) != (backbone.final_norm is None):
        raise ValueError(f"{source}: a final LayerNorm in one of the source and the model "
                         "only")
    if weights.final_norm is not None:
        _assign(backbone.final_norm.gamma, weights.final_norm[0], f"{source} final norm")
        _assign(backbone.final_norm.beta, weights.final_norm[1], f"{source} final norm")


def assign_head(classifier, weights):
    """Writes the head LayerNorm and dense layer of `weights` into an `ASTClassifier`."""
    source = weights.source
    if (weights.head_norm is None) != (classifier.head_norm is None):
        raise ValueError(f"{source}: a head LayerNorm in one of the source and the model only")
    if weights.head_norm is not None:
        _assign(classifier.head_norm.gamma, weights.head_norm[0], f"{source} head norm")
        _assign(classifier.head_norm.beta, weights.head_norm[1], f"{source} head norm")
    _assign(classifier.head.kernel, weights.head[0].T, f"{source} head")
    _assign(classifier.head.bias, weights.head[1], f"{source} head")
