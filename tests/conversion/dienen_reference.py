"""Checkpoints in the format of the paper's code (dienen) and a numpy forward of its models.

Written from the documented names, shapes and maths (the original code is GPL-3.0 and is
neither copied nor imported): a joblib dict `{layer name: [get_weights(), variable
names]}` in the layer order of the original graph, `.dnn` files (a pickled dienen `Model`
whose state holds the weights and the YAML config as a kahnfigh `Config`), architecture
configs laid out as the study's `configs/model/architectures/*.yaml` (small sizes), and the
original forward: STFT magnitude (periodic Hann 400, hop 160, FFT 512), 64 mel bins
(125-7500 Hz), log(x + 0.001), (x + 5.61) / 7.68 and ReLU (the `peg2`/`peg3` runs:
log(x + 0.0001), (x + 0.935) / 2.884, no ReLU), 32 x 8 patches time-major (flat index
t * 8 + f; dienen before 2021-09-07: 8 x 32, 16 x 2 blocks laid out as the 4 x 8 grid),
Dense, a zero [CLS], + positions, LayerNorm, pre-norm blocks without biases
(softmax((QK^T + R) / sqrt(d)), ReLU feed-forward), PEGs, no final LayerNorm,
sigmoid(Dense([CLS])).
"""

import re
import sys
import types

import joblib
import numpy as np
import tensorflow as tf

SAMPLES = 400 + 127 * 160  # 128 frames: 4 time chunks of 32
TIME, FREQ = 4, 8
# Three blocks: dienen's Stamp gives a list parameter as long as `times` (shape_2d: 2) one
# element per copy, so a stamp of two blocks would not keep the grid.
DIM, HEADS, FF, BLOCKS, CLASSES = 32, 4, 64, 3, 5
HEAD_DIM = DIM // HEADS
PEGS = 1
EPS = 1e-6


def _ln(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _coordinates():
    """Time and frequency of each token, [CLS] first (at 0, 0; masked where it matters)."""
    t = np.concatenate([[0], np.repeat(np.arange(TIME), FREQ)])
    f = np.concatenate([[0], np.tile(np.arange(FREQ), TIME)])
    return t, f


# The front ends of the study's configs: log offset, (x - mean) / scale, ReLU.
FRONT_ENDS = {"paper": (1e-3, -5.61, 7.68, True), "peg2": (1e-4, -0.935, 2.884, False)}


def r_matrix(kind, cls_correction=True):
    """The non-trainable ALiBi bias the original stores: ms = 2^-linspace(1, 8, n); with
    the [CLS] correction (dienen from 2021-09-30) the time distance of a patch query to the
    [CLS] key is set to -1e9 before -|.| * m."""
    t, f = _coordinates()
    dt = (t[None, :] - t[:, None]).astype(np.float64)
    df = (f[None, :] - f[:, None]).astype(np.float64)
    for d in (dt, df):
        d[0, :] = d[:, 0] = 0.0
    if cls_correction:
        dt[1:, 0] = -1e9
    if kind == "alibi_2d":
        ms = 2.0 ** -np.linspace(1, 8, HEADS // 2)
        heads = [-m * np.abs(dt) for m in ms] + [-m * np.abs(df) for m in ms]
    else:
        heads = [-m * np.abs(dt) for m in 2.0 ** -np.linspace(1, 8, HEADS)]
    return np.stack(heads).astype(np.float32)


def checkpoint(kind, rng, cls_correction=True):
    """A random checkpoint of `kind` in dienen's `.weights` layout."""
    def weights(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def layer(name, arrays=(), names=()):
        layers[name] = [list(arrays), [f"{name}/{n}:0" for n in names]]

    layers = {}
    for name in ("Spectrogram_0",):
        layer(name)
    layer("SpecAugment_0", [np.ones((128, 257), np.float32)], ["Variable"])
    for name in ("MelScale_0", "Log_0", "TranslateRange_0", "Activation_0", "ExpandDims_0",
                 "patches", "flattened_patches"):
        layer(name)
    layer("patches_projection", [weights(256, DIM), weights(DIM)], ["kernel", "bias"])
    layer("add_cls_token")
    if kind in ("absolute", "conditional_absolute"):
        layer("add_positional_embedding", [weights(1 + TIME * FREQ, DIM)], ["Variable"])
    if kind == "time_alibi":
        layer("add_positional_embedding", [weights(1 + FREQ, DIM)], ["Variable"])
    layer("LayerNormalization_0", [1 + weights(DIM), weights(DIM)], ["gamma", "beta"])
    pegs = PEGS if kind in ("conditional", "conditional_absolute") else 0
    # A PEG model stacks two "transformer_encoder" stamps; dienen renames the second one.
    names = [f"transformer_encoder_{i}/TransformerBlock_0" for i in range(pegs or BLOCKS)]
    if pegs:
        names += [f"Stamp_0_{i}/TransformerBlock_0" for i in range(BLOCKS - pegs)]
    for index, name in enumerate(names):
        arrays, var_names = [], []
        if kind == "learned_relative":
            arrays += [weights(1, 2 * TIME - 1, HEAD_DIM), weights(1, 2 * FREQ - 1, HEAD_DIM)]
            var_names += ["attention/rpe_w", "attention/rpe_h"]
        arrays += [weights(DIM, DIM) for _ in range(4)]
        var_names += [f"{name}_mha_w{c}/kernel" for c in "qkvo"]
        arrays += [1 + weights(DIM), weights(DIM), 1 + weights(DIM), weights(DIM)]
        var_names += [f"{name}_layernorm_{i}/{v}" for i in (1, 2) for v in ("gamma", "beta")]
        arrays += [weights(1, DIM, FF), weights(1, FF, DIM)]
        var_names += [f"{name}_ff_1/kernel", f"{name}_ff_2/kernel"]
        if kind in ("alibi_2d", "time_alibi"):
            arrays.append(r_matrix(kind, cls_correction))
            var_names.append(f"{name}_mha_attention/r_matrix")
        layer(name, arrays, var_names)
        if index < pegs:
            peg = [weights(DIM)] if index == 0 else []
            peg += [weights(3, 3, DIM, 1), weights(DIM)]
            layer(name.replace("TransformerBlock_0", "PEG_0"), peg,
                  (["Variable"] if index == 0 else [])
                  + ["depthwise_conv2d/depthwise_kernel", "depthwise_conv2d/bias"])
    for name in ("get_cls_token", "Squeeze_0"):
        layer(name)
    layer("probs/Dense", [weights(DIM, CLASSES), weights(CLASSES)], ["kernel", "bias"])
    layer("probs/Activation")
    return layers


def forward(layers, waveform, front_end="paper", early_patches=False):
    """The original model's scores `[batch, classes]` for `waveform [batch, SAMPLES]`.

    `front_end`: a key of `FRONT_ENDS`. `early_patches`: dienen before 2021-09-07, whose
    `GetPatches` read `patch_size=[32, 8]` as 32 bins x 8 frames.
    """
    def w(name):
        return layers[name][0]

    offset, mean, scale, relu = FRONT_ENDS[front_end]
    magnitude = np.abs(tf.signal.stft(waveform, 400, 160, 512).numpy())
    mel = magnitude @ tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125, 7500).numpy()
    x = (np.log(mel + offset) - mean) / scale
    x = np.maximum(x, 0.0) if relu else x
    batch = x.shape[0]
    if early_patches:  # blocks of 8 frames x 32 bins, time-major, values frame by frame
        x = (x[:, :TIME * 32].reshape(batch, TIME * 4, 8, 2, 32).transpose(0, 1, 3, 2, 4)
             .reshape(batch, TIME * FREQ, 256))
    else:
        x = (x[:, :TIME * 32].reshape(batch, TIME, 32, FREQ, 8).transpose(0, 1, 3, 2, 4)
             .reshape(batch, TIME * FREQ, 256))
    kernel, bias = w("patches_projection")
    x = np.concatenate([np.zeros((batch, 1, DIM)), x @ kernel + bias], axis=1)
    if "add_positional_embedding" in layers:
        table = w("add_positional_embedding")[0]
        if table.shape[0] == 1 + FREQ:  # time ALiBi: bands tiled over the time chunks
            table = np.concatenate([table[:1], np.tile(table[1:], (TIME, 1))])
        x = x + table
    x = _ln(x, *w("LayerNormalization_0"))
    t, f = _coordinates()
    for name in layers:
        arrays = w(name)
        if "PEG" in name and arrays:
            cls, grid = x[:, :1], x[:, 1:].reshape(batch, TIME, FREQ, DIM)
            kernel, bias = arrays[-2][..., 0], arrays[-1]
            padded = np.pad(grid, ((0, 0), (1, 1), (1, 1), (0, 0)))
            grid = grid + sum(padded[:, i:i + TIME, j:j + FREQ] * kernel[i, j]
                              for i in range(3) for j in range(3)) + bias
            if len(arrays) == 3:
                cls = cls + arrays[0]
            x = np.concatenate([cls, grid.reshape(batch, TIME * FREQ, DIM)], axis=1)
            continue
        if "TransformerBlock" not in name:
            continue
        arrays = list(arrays)
        relative = arrays[:2] if arrays[0].ndim == 3 else None
        arrays = arrays[2:] if relative else arrays
        wq, wk, wv, wo, g1, b1, g2, b2, ff1, ff2 = arrays[:10]
        h = _ln(x, g1, b1)
        q, k, v = ((h @ m).reshape(batch, -1, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
                   for m in (wq, wk, wv))
        logits = q @ k.transpose(0, 1, 3, 2)
        if len(arrays) == 11:
            logits = logits + arrays[10]
        if relative:
            dt, df = t[None, :] - t[:, None], f[None, :] - f[:, None]  # key minus query
            for d in (dt, df):
                d[0, :] = d[:, 0] = 0
            for table, d, n in ((relative[0][0], dt, TIME), (relative[1][0], df, FREQ)):
                rows = np.broadcast_to(d + n - 1, logits.shape)
                logits = logits + np.take_along_axis(q @ table.T, rows, axis=-1)
        logits = logits / np.sqrt(HEAD_DIM)
        attention = np.exp(logits - logits.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        x = x + (attention @ v).transpose(0, 2, 1, 3).reshape(batch, -1, DIM) @ wo
        x = x + np.maximum(_ln(x, g2, b2) @ ff1[0], 0.0) @ ff2[0]
    kernel, bias = w("probs/Dense")
    return 1.0 / (1.0 + np.exp(-(x[:, 0] @ kernel + bias)))


def architecture(kind, front_end="paper"):
    """The `Model/Architecture` layer list of the study's config of `kind`, at the sizes of
    `checkpoint` (as `configs/model/architectures/audio_spectrogram_transformer*.yaml`;
    `front_end="peg2"`: as `_peg2.yaml` / `_peg3.yaml`)."""
    offset, mean, scale, relu = FRONT_ENDS[front_end]
    layers = [{"Input": {"name": "waveform", "shape": [SAMPLES]}},
              {"Spectrogram": {"win_size": 400, "hop_size": 160, "fft_size": 512,
                               "calculate": "magnitude"}}]
    mel = {"MelScale": {"num_mel_bins": 64, "num_spectrogram_bins": 257,
                        "sample_rate": 16000, "lower_edge_hertz": 125,
                        "upper_edge_hertz": 7500}}
    augment = {"SpecAugment": {"f_gaps": [1, 3], "t_gaps": [1, 3], "f_gap_size": [1, 64],
                               "t_gap_size": [1, 100], "probability": 0.5}}
    layers += [mel, augment] if front_end == "peg2" else [augment, mel]
    layers.append({"Log": {"offset": offset}})
    if front_end == "paper":
        layers.append({"TranslateRange": {"original_range": [mean, mean + scale],
                                          "target_range": [0, 1]}})
    else:
        layers.append({"ExternalNormalize": {"scale": scale, "mean": mean}})
    if relu:
        layers.append({"Activation": {"activation": "relu"}})
    layers += [{"ExpandDims": {"axis": -1}},
               {"GetPatches": {"patch_size": [32, 8], "mode": "ud", "name": "patches"}},
               {"Reshape": {"target_shape": [-1, 256], "name": "flattened_patches"}},
               {"ExpandDims": {"axis": -1}},
               {"Dense": {"units": DIM, "input": "flattened_patches",
                          "name": "patches_projection"}},
               {"ZeroPadding1D": {"padding": [1, 0], "name": "add_cls_token"}}]
    if kind in ("absolute", "conditional_absolute", "time_alibi"):
        table = {"initialization": "uniform", "name": "add_positional_embedding"}
        if kind == "time_alibi":
            table.update(cls_token=True, tile=TIME)
        layers.append({"PositionalEmbeddingLookup": table})
    layers.append({"LayerNormalization": {"epsilon": 1e-6}})
    block = {"d_model": DIM, "d_proj": DIM // HEADS, "n_heads": HEADS, "ff_dim": FF,
             "pre_normalization": False, "qkvw_init_scale": [0.707] * 4}
    attention = {"alibi_2d": "alibi2d", "time_alibi": "alibi2d_timeonly",
                 "learned_relative": "huang2d"}.get(kind)
    if attention:
        block.update(relative_attention_type=attention, shape_2d=[TIME, FREQ],
                     cls_token=True)
    if kind in ("conditional", "conditional_absolute"):
        peg = {"kernel_size": 3, "shape_2d": [TIME, FREQ],
               "learn_cls_token": [True] + [False] * (PEGS - 1)}
        layers += [{"Stamp": {"name": "transformer_encoder", "times": "!var n_pegs",
                              "what": [{"TransformerBlock": block}, {"PEG": peg}]}},
                   {"Stamp": {"name": "transformer_encoder", "times": "!var n_no_peg",
                              "what": [{"TransformerBlock": block}]}}]
    else:
        layers.append({"Stamp": {"name": "transformer_encoder", "times": "!var n_blocks",
                                 "what": [{"TransformerBlock": block}]}})
    layers += [{"SliceTensor": {"name": "get_cls_token",
                                "slices": [{"axis": 1, "start": 0, "end": 1}]}},
               {"Squeeze": {"axis": 1}},
               {"Dense": {"units": CLASSES, "activation": "sigmoid", "name": "probs"}}]
    return layers


DEFAULTS = {"n_blocks": BLOCKS, "n_pegs": PEGS, "n_no_peg": BLOCKS - PEGS}


def architecture_yaml(kind, front_end="paper"):
    """`architecture(kind)` as the text of a study's YAML file (`!var` from `defaults`)."""
    import yaml

    text = yaml.safe_dump({"defaults": DEFAULTS, "Model": {
        "name": "audio_spectrogram_transformer", "Architecture": architecture(kind, front_end),
        "inputs": ["waveform"], "outputs": ["probs"]}}, sort_keys=False)
    return re.sub(r"'(!var \w+)'", r"\1", text)


def resolved(architecture_list):
    """The layer list with its `!var` values set from `DEFAULTS`, as a run hands it to
    dienen (and so as a `.dnn` holds it)."""
    if isinstance(architecture_list, str) and architecture_list.startswith("!var "):
        return DEFAULTS[architecture_list[5:]]
    if isinstance(architecture_list, dict):
        return {key: resolved(value) for key, value in architecture_list.items()}
    if isinstance(architecture_list, list):
        return [resolved(value) for value in architecture_list]
    return architecture_list


def _module_class(module, name, base=object):
    cls = type(name, (base,), {})
    cls.__module__, cls.__qualname__ = module, name
    return cls


def write_dnn(path, layers, architecture_list=None):
    """`layers` (a `checkpoint`) as a `.dnn`: a pickled dienen `Model`, its state the
    weights without variable names and (when given) the config, a kahnfigh `Config`
    holding `{"Model": {"Architecture": ...}}` in `store`, as dienen's `__getstate__`."""
    modules = {name: types.ModuleType(name) for name in (
        "dienen", "dienen.core", "dienen.core.model", "kahnfigh")}
    model_class = _module_class("dienen.core.model", "Model")
    config_class = _module_class("kahnfigh", "Config")
    model_class.__getstate__ = lambda self: self.state
    modules["dienen.core.model"].Model = model_class
    modules["kahnfigh"].Config = config_class
    config = config_class()
    config.store = {"Model": {"name": "audio_spectrogram_transformer", "inputs": ["waveform"],
                              "outputs": ["probs"]}}
    if architecture_list is not None:
        config.store["Model"]["Architecture"] = resolved(architecture_list)
    config.yaml_path = None
    model = model_class()
    model.state = {"weights": {name: arrays for name, (arrays, _) in layers.items()},
                   "original_config": config, "input_shapes": [[SAMPLES]],
                   "output_shapes": [[CLASSES]]}
    sys.modules.update(modules)
    try:
        joblib.dump(model, path)
    finally:
        for name in modules:
            del sys.modules[name]
