"""Small random ASTs of transformers and of the original repository's layout, and the
original AST's forward in torch (for the conversion tests; torch and transformers are
test extras: callers skip without them).

The geometry is AST's (128 mel bins x 1024 frames, 16x16 patches, stride 10: 12 x 101),
the width small: 2 blocks of 192 with 3 heads of 64.
"""

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
