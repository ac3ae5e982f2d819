"""Named models: the paper's, the original AST's, and small ones that train on a CPU.

`PRESETS` holds the `ASTBackbone` arguments of each preset; `HEADS` the `ASTClassifier`
arguments of the presets whose head is not a plain dense layer on [CLS], and `FRONT_ENDS`
the front end of the presets that do not use the paper's (see `get_front_end`).
"""

PRESETS = {
    # The paper: 64 mel bins, 32x8 patches (31 x 8 = 248 for 992 frames = 158,960 samples).
    "ast-pe": {
        "num_mel_bins": 64, "num_frames": 992, "patch_size": (32, 8), "patch_stride": None,
        "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 2048,
        "activation": "relu", "use_attention_bias": False,
    },
    # Original AST (DeiT-Base, YuanGongND/ast): 128 mel bins, 16x16 patches with stride 10
    # (12 x 101 = 1212 patches for 1024 frames), [CLS] and a distillation token, no
    # LayerNorm after the embeddings, a final one (timm's epsilon 1e-6), exact GELU, biases
    # everywhere, no dropout.
    "ast": {
        "num_mel_bins": 128, "num_frames": 1024, "patch_size": (16, 16),
        "patch_stride": (10, 10), "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
        "intermediate_dim": 3072, "activation": "gelu", "use_attention_bias": True,
        "dropout": 0.0, "layer_norm_epsilon": 1e-6, "distillation_token": True,
        "embedding_norm": False, "final_norm": True,
    },
    # CPU-sized models with the paper's front end and patches.
    "ast-pe-small": {
        "num_mel_bins": 64, "num_frames": 992, "patch_size": (32, 8), "patch_stride": None,
        "hidden_dim": 192, "num_layers": 4, "num_heads": 6, "intermediate_dim": 512,
        "activation": "relu", "use_attention_bias": False, "num_peg_layers": 2,
    },
    "ast-pe-tiny": {
        "num_mel_bins": 64, "num_frames": 992, "patch_size": (32, 8), "patch_stride": None,
        "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "intermediate_dim": 128,
        "activation": "relu", "use_attention_bias": False, "num_peg_layers": 2,
    },
}


# `ASTClassifier` arguments. AST's head: LayerNorm (PyTorch's epsilon 1e-5) + dense on the
# mean of the [CLS] and distillation states.
HEADS = {
    "ast": {"head_norm": True, "head_norm_epsilon": 1e-5},
}

# The front end of a preset: "log_mel", the paper's (`LogMelAudioConverter`: STFT
# magnitude, 64 mel bins, log, scaled to [0, 1] by the training set's statistics), or
# "kaldi_fbank", AST's (`KaldiFbankAudioConverter`: kaldi's log-mel filterbank, padded or
# cut to `num_frames`, (x - mean) / (2 std) with AudioSet's statistics).
FRONT_ENDS = {
    "ast": "kaldi_fbank",
}


def _check(name):
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")


def get_preset(name):
    """A copy of the backbone arguments of preset `name`."""
    _check(name)
    return dict(PRESETS[name])


def get_head(name):
    """The `ASTClassifier` arguments of preset `name` (empty: the default head)."""
    _check(name)
    return dict(HEADS.get(name, {}))


def get_front_end(name):
    """`"log_mel"` or `"kaldi_fbank"`: the front end preset `name` is trained with."""
    _check(name)
    return FRONT_ENDS.get(name, "log_mel")
