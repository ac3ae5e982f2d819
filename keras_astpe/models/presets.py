"""Named model sizes: the paper's, the original AST's, and small ones that train on a CPU."""

PRESETS = {
    # The paper: 64 mel bins, 32x8 patches (31 x 8 = 248 for 992 frames = 158,960 samples).
    "ast-pe": {
        "num_mel_bins": 64, "num_frames": 992, "patch_size": (32, 8), "patch_stride": None,
        "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 2048,
        "activation": "relu", "use_attention_bias": False,
    },
    # Original AST (ViT-Base): 128 mel bins, 16x16 patches with stride 10
    # (12 x 101 = 1212 patches for 1024 frames), GELU, biases in the attention projections.
    "ast": {
        "num_mel_bins": 128, "num_frames": 1024, "patch_size": (16, 16),
        "patch_stride": (10, 10), "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
        "intermediate_dim": 3072, "activation": "gelu", "use_attention_bias": True,
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


def get_preset(name):
    """A copy of the backbone arguments of preset `name`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    return dict(PRESETS[name])
