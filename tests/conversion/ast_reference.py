"""Small random ASTs of transformers and of the original repository's layout, the
original AST's forward in torch (for the conversion tests; torch and transformers are
test extras: callers skip without them), and random timm DeiT state dicts (ImageNet init).

The geometry is AST's (128 mel bins x 1024 frames, 16x16 patches, stride 10: 12 x 101),
the width small: 2 blocks of 192 with 3 heads of 64.
"""

import json
import struct

import numpy as np

NUM_CLASSES = 5
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 192, 2, 3, 384


def small_hf_model(seed=0, **config):
    """A random `ASTForAudioClassification`, parameters perturbed so that no LayerNorm is
    the identity and no bias zero."""
    import torch
    import transformers

    torch.manual_seed(seed)
    ast_config = transformers.ASTConfig(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, num_labels=NUM_CLASSES,
        id2label={i: f"class {i}" for i in range(NUM_CLASSES)}, **config)
    model = transformers.ASTForAudioClassification(ast_config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def hf_logits(model, features):
    import torch

    with torch.no_grad():
        return model(torch.tensor(features)).logits.numpy()


def original_state_dict(hf_model):
    """The state dict of the original repository's AST (`DataParallel`-wrapped) with the
    weights of `hf_model`: `module.v.*` (timm DeiT, qkv rows [q; k; v], DeiT's ImageNet
    heads), `module.mlp_head.{0,1}`."""
    import torch

    state = {key: value.detach().clone() for key, value in hf_model.state_dict().items()}
    ast = "audio_spectrogram_transformer."
    embeddings = ast + "embeddings."
    out = {
        "module.v.cls_token": state[embeddings + "cls_token"],
        "module.v.pos_embed": state[embeddings + "position_embeddings"],
        "module.v.dist_token": state[embeddings + "distillation_token"],
        "module.v.patch_embed.proj.weight":
            state[embeddings + "patch_embeddings.projection.weight"],
        "module.v.patch_embed.proj.bias": state[embeddings + "patch_embeddings.projection.bias"],
    }
    for i in range(LAYERS):
        layer, block = f"{ast}layers.{i}.", f"module.v.blocks.{i}."
        for name in ("weight", "bias"):
            out[block + f"norm1.{name}"] = state[layer + f"layernorm_before.{name}"]
            out[block + f"norm2.{name}"] = state[layer + f"layernorm_after.{name}"]
            out[block + f"attn.qkv.{name}"] = torch.cat(
                [state[layer + f"attention.{p}_proj.{name}"] for p in "qkv"])
            out[block + f"attn.proj.{name}"] = state[layer + f"attention.o_proj.{name}"]
            out[block + f"mlp.fc1.{name}"] = state[layer + f"mlp.fc1.{name}"]
            out[block + f"mlp.fc2.{name}"] = state[layer + f"mlp.fc2.{name}"]
    for name in ("weight", "bias"):
        out[f"module.v.norm.{name}"] = state[ast + f"layernorm.{name}"]
        out[f"module.mlp_head.0.{name}"] = state[f"classifier.layernorm.{name}"]
        out[f"module.mlp_head.1.{name}"] = state[f"classifier.dense.{name}"]
    out["module.v.head.weight"] = torch.randn(1000, HIDDEN)  # DeiT's, unused by AST
    out["module.v.head.bias"] = torch.randn(1000)
    out["module.v.head_dist.weight"] = torch.randn(1000, HIDDEN)
    out["module.v.head_dist.bias"] = torch.randn(1000)
    return out


def original_logits(state, features, fstride=10, tstride=10):
    """The original AST's forward (`ast_models.py` `ASTModel.forward`, timm 0.4.5 blocks):
    LayerNorm epsilons 1e-6 in the encoder, 1e-5 in the head, exact GELU."""
    import torch
    import torch.nn.functional as F

    def p(name):
        return state["module." + name]

    with torch.no_grad():
        x = torch.tensor(features).unsqueeze(1).transpose(2, 3)  # [B, 1, freq, time]
        x = F.conv2d(x, p("v.patch_embed.proj.weight"), p("v.patch_embed.proj.bias"),
                     stride=(fstride, tstride)).flatten(2).transpose(1, 2)
        batch = x.shape[0]
        x = torch.cat([p("v.cls_token").expand(batch, -1, -1),
                       p("v.dist_token").expand(batch, -1, -1), x], dim=1) + p("v.pos_embed")
        for i in range(LAYERS):
            def b(name, i=i):
                return p(f"v.blocks.{i}.{name}")

            h = F.layer_norm(x, (HIDDEN,), b("norm1.weight"), b("norm1.bias"), 1e-6)
            qkv = F.linear(h, b("attn.qkv.weight"), b("attn.qkv.bias"))
            qkv = qkv.reshape(batch, -1, 3, HEADS, HIDDEN // HEADS).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attention = (q @ k.transpose(-2, -1) * (HIDDEN // HEADS) ** -0.5).softmax(-1)
            h = (attention @ v).transpose(1, 2).reshape(batch, -1, HIDDEN)
            x = x + F.linear(h, b("attn.proj.weight"), b("attn.proj.bias"))
            h = F.layer_norm(x, (HIDDEN,), b("norm2.weight"), b("norm2.bias"), 1e-6)
            h = F.linear(F.gelu(F.linear(h, b("mlp.fc1.weight"), b("mlp.fc1.bias"))),
                         b("mlp.fc2.weight"), b("mlp.fc2.bias"))
            x = x + h
        x = F.layer_norm(x, (HIDDEN,), p("v.norm.weight"), p("v.norm.bias"), 1e-6)
        x = (x[:, 0] + x[:, 1]) / 2
        x = F.layer_norm(x, (HIDDEN,), p("mlp_head.0.weight"), p("mlp_head.0.bias"), 1e-5)
        return F.linear(x, p("mlp_head.1.weight"), p("mlp_head.1.bias")).numpy()


def features(batch=2, frames=1024, seed=0):
    """Random normalized fbank features `[batch, frames, 128]`."""
    return np.random.default_rng(seed).standard_normal((batch, frames, 128)).astype("float32")


def write_safetensors(path, tensors):
    """A `.safetensors` file by hand (8-byte header size, JSON header, little-endian data):
    `tensors` maps names to `(dtype name, array)` or to float32 arrays."""
    header, data, offset = {}, b"", 0
    for name, value in tensors.items():
        dtype, array = value if isinstance(value, tuple) else ("F32", value)
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)


def write_hf_folder(folder, seed=0, num_frames=1024):
    """A transformers AST checkpoint folder written without transformers: `config.json`
    and `model.safetensors` in the on-disk (ViT) key layout, random weights."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.1).astype("float32")

    grid = 12 * ((num_frames - 16) // 10 + 1)
    ast = "audio_spectrogram_transformer."
    tensors = {
        ast + "embeddings.cls_token": w(1, 1, HIDDEN),
        ast + "embeddings.distillation_token": w(1, 1, HIDDEN),
        ast + "embeddings.position_embeddings": w(1, grid + 2, HIDDEN),
        ast + "embeddings.patch_embeddings.projection.weight": w(HIDDEN, 1, 16, 16),
        ast + "embeddings.patch_embeddings.projection.bias": w(HIDDEN),
        ast + "layernorm.weight": 1 + w(HIDDEN), ast + "layernorm.bias": w(HIDDEN),
        "classifier.layernorm.weight": 1 + w(HIDDEN), "classifier.layernorm.bias": w(HIDDEN),
        "classifier.dense.weight": w(NUM_CLASSES, HIDDEN), "classifier.dense.bias": w(NUM_CLASSES),
    }
    for i in range(LAYERS):
        layer = f"{ast}encoder.layer.{i}."
        for name, shape in (("attention.attention.query", (HIDDEN, HIDDEN)),
                            ("attention.attention.key", (HIDDEN, HIDDEN)),
                            ("attention.attention.value", (HIDDEN, HIDDEN)),
                            ("attention.output.dense", (HIDDEN, HIDDEN)),
                            ("intermediate.dense", (INTERMEDIATE, HIDDEN)),
                            ("output.dense", (HIDDEN, INTERMEDIATE))):
            tensors[f"{layer}{name}.weight"] = w(*shape)
            tensors[f"{layer}{name}.bias"] = w(shape[0])
        for norm in ("layernorm_before", "layernorm_after"):
            tensors[f"{layer}{norm}.weight"] = 1 + w(HIDDEN)
            tensors[f"{layer}{norm}.bias"] = w(HIDDEN)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["ASTForAudioClassification"],
        "model_type": "audio-spectrogram-transformer", "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "patch_size": 16, "qkv_bias": True, "frequency_stride": 10, "time_stride": 10,
        "max_length": num_frames, "num_mel_bins": 128,
        "id2label": {str(i): f"class {i}" for i in range(NUM_CLASSES)}}))
    return folder


def deit_state(width, blocks, intermediate, distilled=True, seed=0, scale=1.0, side=24):
    """A random timm ViT/DeiT state dict (384 px: a `side` x `side` grid of 16x16 patches),
    with a distillation token and head when `distilled`."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return scale * rng.standard_normal(shape).astype("float32")

    state = {"cls_token": w(1, 1, width), "pos_embed": w(1, 1 + distilled + side * side, width),
             "patch_embed.proj.weight": w(width, 3, 16, 16), "patch_embed.proj.bias": w(width),
             "norm.weight": 1 + w(width), "norm.bias": w(width), "head.weight": w(1000, width),
             "head.bias": w(1000)}
    if distilled:
        state.update({"dist_token": w(1, 1, width), "head_dist.weight": w(1000, width),
                      "head_dist.bias": w(1000)})
    for i in range(blocks):
        for name, shape in (("norm1", (width,)), ("norm2", (width,)),
                            ("attn.qkv", (3 * width, width)), ("attn.proj", (width, width)),
                            ("mlp.fc1", (intermediate, width)),
                            ("mlp.fc2", (width, intermediate))):
            state[f"blocks.{i}.{name}.weight"] = w(*shape)
            state[f"blocks.{i}.{name}.bias"] = w(shape[0])
    return state
