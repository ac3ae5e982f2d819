"""transformers' `ASTForAudioClassification` checkpoints -> a keras-astpe `ASTClassifier`.

A checkpoint folder (what `save_pretrained` writes, as on the Hugging Face Hub) holds
`config.json` and `model.safetensors` or `pytorch_model.bin`, and often
`preprocessor_config.json` (the feature extractor: statistics and length). Two key
layouts exist: the one every release writes to disk (ViT's: `encoder.layer.{i}.attention.
attention.query`, ...) and transformers 5's module names in memory (`layers.{i}.attention.
q_proj`, ...); both are read.
"""

import json
import os
import re

from keras_astpe.conversion.ast_model import ASTGeometry, build_ast_classifier
from keras_astpe.conversion.state_dicts import read_state_dict
from keras_astpe.conversion.vit_weights import from_timm_names
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREFIX = "audio_spectrogram_transformer."
# transformers name -> timm name (after the block index); both layouts.
_BLOCK_RENAMES = (
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
    ("attention.attention.query.", "attn.q."), ("attention.attention.key.", "attn.k."),
    ("attention.attention.value.", "attn.v."), ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("attention.q_proj.", "attn.q."), ("attention.k_proj.", "attn.k."),
    ("attention.v_proj.", "attn.v."), ("attention.o_proj.", "attn.proj."),
    ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."),
)
_RENAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HEAD_RENAMES = {
    "classifier.layernorm.weight": "head_norm.weight",
    "classifier.layernorm.bias": "head_norm.bias",
    "classifier.dense.weight": "head.weight",
    "classifier.dense.bias": "head.bias",
}
_BLOCK = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.*)")


def timm_names(state, source):
    """transformers' AST tensor names (either layout) -> timm's, and the head's."""
    renamed = {}
    for name, value in state.items():
        if name in _HEAD_RENAMES:
            renamed[_HEAD_RENAMES[name]] = value
            continue
        if not name.startswith(PREFIX):
            raise ValueError(f"{source}: unexpected tensor {name!r} (not an "
                             "ASTForAudioClassification checkpoint?)")
        inner = name[len(PREFIX):]
        match = _BLOCK.fullmatch(inner)
        if match:
            index, rest = match.groups()
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    renamed[f"blocks.{index}.{new}{rest[len(old):]}"] = value
                    break
            else:
                raise ValueError(f"{source}: unexpected tensor {name!r}")
        elif inner in _RENAMES:
            renamed[_RENAMES[inner]] = value
        else:
            raise ValueError(f"{source}: unexpected tensor {name!r}")
    return renamed


def _weights_file(folder):
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{folder}: no {' or '.join(WEIGHT_FILES)} (a transformers "
                            "checkpoint folder, as save_pretrained writes it)")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def geometry_of(config, preprocessor, num_patches, source):
    """AST's grid from `config.json`, with the number of frames from the position table.

    The frame count is the preprocessor's `max_length`, or the config's, if it gives the
    grid of the position table (transformers' own conversion leaves `max_length` at 1024
    for the 128-frame Speech Commands models), else the smallest that does.
    """
    patch = int(config.get("patch_size", 16))
    fstride = int(config.get("frequency_stride", 10))
    tstride = int(config.get("time_stride", 10))
    mel_bins = int(config.get("num_mel_bins", 128))
    freq = (mel_bins - patch) // fstride + 1
    if num_patches % freq:
        raise ValueError(f"{source}: {num_patches} patch positions are not a multiple of "
                         f"the {freq} frequency patches of {mel_bins} mel bins")
    time = num_patches // freq
    candidates = [preprocessor.get("max_length"), config.get("max_length"),
                  patch + (time - 1) * tstride]
    frames = next(int(n) for n in candidates
                  if n is not None and (int(n) - patch) // tstride + 1 == time)
    return ASTGeometry(mel_bins, frames, patch, fstride, tstride)


def convert_transformers_ast(folder, activation="sigmoid"):
    """The `ASTClassifier` of a transformers AST checkpoint folder, with its front end
    (statistics and length from `preprocessor_config.json`, else AST's AudioSet ones) and
    its class names (`id2label`)."""
    folder = os.fspath(folder)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder}: no config.json (a transformers checkpoint "
                                "folder, as save_pretrained writes it)")
    config = _read_json(config_path)
    if config.get("model_type") != "audio-spectrogram-transformer":
        raise ValueError(f"{config_path}: model_type is {config.get('model_type')!r}, not "
                         "'audio-spectrogram-transformer'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{config_path}: hidden_act {config['hidden_act']!r}; only AST's "
                         "exact 'gelu' is supported")
    preprocessor_path = os.path.join(folder, "preprocessor_config.json")
    preprocessor = _read_json(preprocessor_path) if os.path.isfile(preprocessor_path) else {}
    path = _weights_file(folder)
    state = timm_names(read_state_dict(path), path)
    hidden = state["cls_token"].shape[-1]
    num_patches = state["pos_embed"].reshape(-1, hidden).shape[0] - 2
    geometry = geometry_of(config, preprocessor, num_patches, path)
    weights = from_timm_names(state, path, grid_shape=geometry.grid_shape)
    weights.head_norm = (state["head_norm.weight"], state["head_norm.bias"])
    weights.head = (state["head.weight"], state["head.bias"])
    labels = config.get("id2label") or {}
    class_names = [labels[key] for key in sorted(labels, key=int)] if labels else None
    if class_names is not None and len(class_names) != weights.head[0].shape[0]:
        class_names = None  # transformers' default labels of another size
    if preprocessor and not preprocessor.get("do_normalize", True):
        raise ValueError(f"{preprocessor_path}: do_normalize is false; the converted model "
                         "always normalizes as AST")
    front_end = KaldiFbankConfig(
        sample_rate=int(preprocessor.get("sampling_rate", 16000)),
        num_mel_bins=geometry.num_mel_bins, target_frames=geometry.num_frames,
        mean=float(preprocessor.get("mean", KaldiFbankConfig.mean)),
        std=float(preprocessor.get("std", KaldiFbankConfig.std)))
    eps = float(config.get("layer_norm_eps", 1e-12))
    return build_ast_classifier(
        weights, geometry, num_heads=int(config.get("num_attention_heads", 12)),
        layer_norm_epsilon=eps, head_norm_epsilon=eps,
        audio_converter=KaldiFbankAudioConverter(front_end), class_names=class_names,
        activation=activation)
