"""Named models: the paper's, the original AST's, and small ones that train on a CPU.

A preset is one entry of `PRESETS`: the `ASTBackbone` arguments, the `ASTClassifier`
arguments of its head, and the front end it is trained with. `preset_audio_converter`
makes that front end from a training set's statistics; nothing else chooses a front end.

Front ends: `"log_mel"`, the paper's (`LogMelAudioConverter`: STFT magnitude, log-mel,
scaled to [0, 1] by the training set's statistics), or `"kaldi_fbank"`, AST's
(`KaldiFbankAudioConverter`: kaldi's log-mel filterbank, (x - mean) / (2 std) with
AudioSet's fixed statistics).
"""

import dataclasses
import types

from keras_astpe.frontend import FrontEndConfig
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter, LogMelAudioConverter

FRONT_ENDS = ("log_mel", "kaldi_fbank")


@dataclasses.dataclass(frozen=True)
class Preset:
    """`backbone`: `ASTBackbone` arguments; `head`: `ASTClassifier` arguments (empty: a
    dense layer on [CLS]); `front_end`: one of `FRONT_ENDS`."""

    backbone: types.MappingProxyType
    head: types.MappingProxyType = dataclasses.field(default_factory=dict)
    front_end: str = "log_mel"

    def __post_init__(self):
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {self.front_end!r}")
        object.__setattr__(self, "backbone", types.MappingProxyType(dict(self.backbone)))
        object.__setattr__(self, "head", types.MappingProxyType(dict(self.head)))

    @property
    def needs_statistics(self):
        """Whether the front end scales by statistics computed from the training set."""
        return self.front_end == "log_mel"

    @property
    def log_mel_config(self):
        """The `FrontEndConfig` of a log-mel preset (its statistics are computed for it)."""
        return FrontEndConfig(num_mel_bins=self.backbone["num_mel_bins"])


# The paper's and the small presets share the paper's patches: 64 mel bins, 32x8 patches
# (31 x 8 = 248 patches for 992 frames = 158,960 samples), no biases in attention.
_PAPER_PATCHES = {"num_mel_bins": 64, "num_frames": 992, "patch_size": (32, 8),
                  "patch_stride": None, "activation": "relu", "use_attention_bias": False}

PRESETS = {
    "ast-pe": Preset({**_PAPER_PATCHES, "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
                      "intermediate_dim": 2048}),
    # Original AST (DeiT-Base, YuanGongND/ast): 128 mel bins, 16x16 patches with stride 10
    # (12 x 101 = 1212 patches for 1024 frames), [CLS] and a distillation token, no
    # LayerNorm after the embeddings, a final one (timm's epsilon 1e-6), exact GELU, biases
    # everywhere, no dropout. Its head: LayerNorm (PyTorch's epsilon 1e-5) + dense on the
    # mean of the [CLS] and distillation states.
    "ast": Preset(
        {"num_mel_bins": 128, "num_frames": 1024, "patch_size": (16, 16),
         "patch_stride": (10, 10), "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
         "intermediate_dim": 3072, "activation": "gelu", "use_attention_bias": True,
         "dropout": 0.0, "layer_norm_epsilon": 1e-6, "distillation_token": True,
         "embedding_norm": False, "final_norm": True},
        head={"head_norm": True, "head_norm_epsilon": 1e-5},
        front_end="kaldi_fbank"),
    # CPU-sized models with the paper's front end and patches.
    "ast-pe-small": Preset({**_PAPER_PATCHES, "hidden_dim": 192, "num_layers": 4,
                            "num_heads": 6, "intermediate_dim": 512, "num_peg_layers": 2}),
    "ast-pe-tiny": Preset({**_PAPER_PATCHES, "hidden_dim": 64, "num_layers": 2,
                           "num_heads": 4, "intermediate_dim": 128, "num_peg_layers": 2}),
}


def get_preset_entry(name):
    """The `Preset` named `name`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    return PRESETS[name]


def get_preset(name):
    """A copy of the backbone arguments of preset `name`."""
    return dict(get_preset_entry(name).backbone)


def get_head(name):
    """The `ASTClassifier` arguments of preset `name` (empty: the default head)."""
    return dict(get_preset_entry(name).head)


def get_front_end(name):
    """`"log_mel"` or `"kaldi_fbank"`: the front end preset `name` is trained with."""
    return get_preset_entry(name).front_end


def preset_audio_converter(name, stats=None, *, fixed_frames=True):
    """The audio converter preset `name` trains with.

    `stats`: the training set's `NormalizationStats`, required by a front end that
    `needs_statistics` (and refused by one with fixed statistics). `fixed_frames`: AST's
    front end pads or cuts every clip to the preset's frames, as AST trains on AudioSet;
    False keeps each clip's own frames (clips of another length, e.g. ESC-50's 5 s).
    """
    preset = get_preset_entry(name)
    num_mel_bins = preset.backbone["num_mel_bins"]
    if preset.front_end == "log_mel":
        if stats is None:
            raise ValueError(f"preset {name!r} scales its log-mel features by the training "
                             "set's statistics: pass stats")
        return LogMelAudioConverter(preset.log_mel_config, stats)
    if stats is not None:
        raise ValueError(f"preset {name!r} uses AST's fixed fbank statistics; got stats")
    target_frames = preset.backbone["num_frames"] if fixed_frames else None
    return KaldiFbankAudioConverter(KaldiFbankConfig(num_mel_bins=num_mel_bins,
                                                     target_frames=target_frames))
