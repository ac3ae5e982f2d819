"""The paper's own trained models: `dienen` checkpoints -> a keras-astpe `ASTClassifier`.

The study's code (habla-liaa/ast-pe on mrpep/dienen) saves models with joblib:

- `.weights` training checkpoints: `{layer name: [layer.get_weights(), [variable
  names]]}` for every layer of the Keras model (layers without weights hold `[[], []]`);
- `.dnn` whole models: a pickled `dienen.Model` whose state holds `weights`, `{layer name:
  layer.get_weights()}`, and `original_config`, the model's YAML config (a kahnfigh
  `Config`), among other configs and the optimizer state.

Both are read without dienen (and without running code from the file: classes other than
numpy's arrays are replaced by inert stand-ins). Several checkpoints are averaged (SWA, as
the paper's notebooks do over the last checkpoints; dienen's own `swa.weights` callback
file holds a *sum*, not an average: pass the checkpoints instead).

The models (SPEC section 1, `configs/model/architectures/audio_spectrogram_transformer*`)
take the waveform: STFT, (SpecAugment), 64 mel bins, log(x + 0.001), TranslateRange from
[-5.61, 2.07] to [0, 1] and ReLU (`LogMelAudioConverter` with `NormalizationStats(-5.61,
2.07)`), 32 x 8 patches (`patches_projection`), a zero [CLS] (`add_cls_token`), the
absolute table (`add_positional_embedding`, row 0 for [CLS]; time ALiBi: [CLS] and one
row per frequency band), `LayerNormalization_0`, pre-norm blocks without biases and with
ReLU, PEGs after the first blocks, no final LayerNorm, and `probs/Dense` + sigmoid on
[CLS]. The converted model sets the options that reproduce this exactly: no final norm,
no feed-forward biases, [CLS] = its position (or zero), relative rows by key minus query,
the PEG [CLS] embedding when the first PEG has one, and short clips zero-padded to the
model's input length, as the original evaluation did.

Some runs differ in ways the weights' shapes do not show. The model config, from a `.dnn`
file or given as the original architecture YAML (`config`), states them and is followed:
the front end (`peg2`/`peg3`: log(x + 0.0001), `ExternalNormalize` (x + 0.935) / 2.884 and
no ReLU), the patches (`GetPatches`; dienen before 2021-09-07 cut 8 frames x 32 bins for
the same `patch_size: [32, 8]`, which no file records: `patches="8x32"`), the PEG
placement and the grid of the position layers. The stored ALiBi bias gives its slopes and
its [CLS] blocking (runs before dienen's 2021-09-30 correction block nothing). What neither
the file nor the caller states is assumed as the paper's and listed in
`DienenConversion.assumed`.
"""

import os
import threading

import numpy as np
import yaml

from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.backbone import ASTBackbone
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.models.position_encodings import PE_KINDS
from keras_astpe.models.presets import get_preset
from keras_astpe.normalization import NormalizationStats

ORIGINAL_STATS = NormalizationStats(low=-5.61, high=2.07)  # TranslateRange's input range
BLOCKED = -1e5  # a stored ALiBi bias below this blocks the key
HEAD_DIM = 64
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"), ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"), ("builtins", "bytearray"), ("copyreg", "_reconstructor"),
    ("_codecs", "encode"), ("builtins", "object"),
}
_LOAD_LOCK = threading.Lock()


class _Inert(dict):
    """Stands in for any class of a pickle that is not a numpy array (dienen's `Model`,
    kahnfigh's `Config`, ruamel's maps and lists, ...): keeps what the pickle gives it
    (mapping items, list items in `items_list`, its state in `state`), runs nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.state = state

    @property
    def items_list(self):
        return self.__dict__.setdefault("_items", [])

    def append(self, item):
        self.items_list.append(item)

    def extend(self, items):
        self.items_list.extend(items)


def _stand_in(module, name):
    return type(name, (_Inert,), {"__module__": f"inert.{module}"})


def _load_pickle(path):
    """`joblib.load(path)` with every class outside `_SAFE_GLOBALS` replaced by `_Inert`."""
    from joblib import numpy_pickle

    base = numpy_pickle.NumpyUnpickler

    class Unpickler(base):
        def find_class(self, module, name):
            if (module, name) in _SAFE_GLOBALS:
                return super().find_class(module, name)
            return _stand_in(module, name)

    import joblib

    with _LOAD_LOCK:
        numpy_pickle.NumpyUnpickler = Unpickler
        try:
            return joblib.load(path)
        except Exception as error:  # a damaged or foreign file fails in many ways
            raise ValueError(f"{path}: not a joblib checkpoint ({error})") from None
        finally:
            numpy_pickle.NumpyUnpickler = base


def read_checkpoint(path):
    """`{layer name: [arrays]}` of a dienen `.weights` checkpoint or `.dnn` model."""
    return _read_file(path)[0]


def _read_file(path):
    """`(layers, architecture)` of a checkpoint: its weights, and for a `.dnn` the layer
    list of its config (`Model/Architecture`; None when it has none)."""
    path = _existing_file(path, "checkpoint")
    content = _load_pickle(path)
    state = getattr(content, "state", None)
    architecture = None
    if isinstance(state, dict) and isinstance(state.get("weights"), dict):
        layers = state["weights"]  # a .dnn: {layer: get_weights()}
        config = _plain(state.get("original_config"))
        if isinstance(config, dict) and isinstance(config.get("Model"), dict) and (
                "Architecture" in config["Model"]):
            architecture = _architecture_of(config, f"{path} (its config)")
    elif isinstance(content, dict) and not isinstance(content, _Inert):
        layers = {}
        for name, entry in content.items():
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                raise ValueError(f"{path}: layer {name!r} is not [weights, variable names]: "
                                 "not a dienen .weights checkpoint")
            layers[name] = entry[0]
    else:
        raise ValueError(f"{path}: neither a dienen .weights checkpoint (a dict of layers) "
                         "nor a .dnn model")
    checkpoint = {}
    for name, weights in layers.items():
        if not isinstance(weights, (list, tuple)) or not all(
                isinstance(w, np.ndarray) and w.dtype.kind in "fiu" for w in weights):
            raise ValueError(f"{path}: layer {name!r} holds something other than numeric "
                             "arrays: not a dienen checkpoint")
        checkpoint[name] = list(weights)
    return checkpoint, architecture


def _existing_file(path, what):
    """`path` as a string; a missing file is an error naming it and `what` it should be."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} file not found")
    return path


def _plain(value):
    """Plain dicts, lists and scalars from what `_load_pickle` gives for a config (kahnfigh
    `Config`s hold theirs in `store`; ruamel's maps and lists arrive as stand-ins)."""
    if isinstance(value, _Inert):
        if len(value):
            return {key: _plain(item) for key, item in value.items()}
        if value.items_list:
            return [_plain(item) for item in value.items_list]
        state = getattr(value, "state", None)
        if isinstance(state, dict) and "store" in state:
            return _plain(state["store"])
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class _Tagged(str):
    """A YAML value with a tag of the original configs (`!var NAME`, `!yaml FILE`, ...)."""


def read_architecture(path):
    """The layer list (`Model/Architecture`) of an original architecture YAML, its `!var`
    values taken from the file's `defaults` (as the study's runs set them)."""
    path = _existing_file(path, "config")

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, tag, node):
        value = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else ""
        return _Tagged(f"!{tag} {value}".strip())

    Loader.add_multi_constructor("!", tagged)
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a YAML file ({error})".replace("\n", " ")) from None
    if not (isinstance(config, dict) and isinstance(config.get("Model"), dict)):
        raise ValueError(f"{path}: no Model section: not an architecture config of the "
                         "paper's code")
    return _architecture_of(config, path)


def _architecture_of(config, source):
    """`Model/Architecture` of a config, `!var` values resolved from its `defaults`."""
    architecture = config["Model"].get("Architecture")
    if not isinstance(architecture, list):
        raise ValueError(f"{source}: no Model/Architecture layer list")
    defaults = config.get("defaults") or {}

    def resolve(value):
        if isinstance(value, str) and value.startswith("!var "):
            return defaults.get(value[5:].strip(), value)
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return value

    return _flatten(resolve(architecture), source)


def _flatten(architecture, source):
    """`[(class, params)]` in order, `Stamp`s unrolled as dienen does (a list parameter as
    long as `times` gives one element per copy, one of length 1 its element)."""
    layers = []
    for entry in architecture:
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise ValueError(f"{source}: Model/Architecture entry {entry!r} is not "
                             "{Class: {parameters}}")
        (cls, params), = entry.items()
        params = params or {}
        if cls != "Stamp":
            layers.append((cls, params))
            continue
        what = params.get("what") or []
        depth = max([1] + [len(value) for item in what for value in
                           (next(iter(item.values())) or {}).values()
                           if isinstance(value, list)])
        times = _number(params.get("times", depth), "Stamp times", source)
        for index in range(times):
            copies = []
            for item in what:
                (inner, inner_params), = item.items()
                inner_params = dict(inner_params or {})
                for key, value in inner_params.items():
                    if isinstance(value, list) and len(value) == times > 1:
                        inner_params[key] = value[index]
                    elif isinstance(value, list) and len(value) == 1:
                        inner_params[key] = value[0]
                copies.append({inner: inner_params})
            layers += _flatten(copies, source)
    return layers


def _number(value, what, source):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{source}: {what} is {value!r}, not a number (a !var the "
                         "file's defaults do not set?)")
    return int(value) if float(value).is_integer() else float(value)


def average_checkpoints(checkpoints, paths):
    """The mean of checkpoints of one model (SWA), array by array."""
    first = checkpoints[0]
    for other, path in zip(checkpoints[1:], paths[1:], strict=True):
        if list(other) != list(first):
            raise ValueError(f"{path}: other layers than {paths[0]}")
        for name in first:
            shapes = [w.shape for w in first[name]], [w.shape for w in other[name]]
            if shapes[0] != shapes[1]:
                raise ValueError(f"{path}: layer {name!r} has shapes {shapes[1]}, "
                                 f"{paths[0]} {shapes[0]}")
    return {name: [np.mean([c[name][i].astype(np.float64) for c in checkpoints], axis=0)
                   .astype(np.float32) for i in range(len(first[name]))]
            for name in first}


def _block_arrays(name, arrays, source):
    """A TransformerBlock's arrays by role (get_weights order: [rpe_w, rpe_h], wq, wk, wv,
    wo, layernorm_1 gamma, beta, layernorm_2 gamma, beta, ff_1, ff_2, [r_matrix])."""
    arrays = list(arrays)
    block = {}
    if arrays and arrays[0].ndim == 3 and arrays[0].shape[0] == 1:
        block["rpe_w"], block["rpe_h"] = arrays.pop(0)[0], arrays.pop(0)[0]
    if len(arrays) == 11:
        block["r_matrix"] = arrays.pop()
    shapes = [a.shape for a in arrays]
    if (len(arrays) != 10 or any(len(s) != 2 or s[0] != s[1] for s in shapes[:4])
            or any(len(s) != 1 for s in shapes[4:8]) or len(shapes[8]) != 3
            or len(shapes[9]) != 3):
        raise ValueError(f"{source}: layer {name!r} is not a TransformerBlock of the "
                         f"original code without biases (shapes {shapes})")
    keys = ("wq", "wk", "wv", "wo", "ln1_gamma", "ln1_beta", "ln2_gamma", "ln2_beta",
            "ff1", "ff2")
    block.update(zip(keys, arrays, strict=True))
    block["ff1"], block["ff2"] = block["ff1"][0], block["ff2"][0]
    return block


def _position_parts(pe):
    """The position layers a model of kind `pe` has in the original code: `{part: has}`."""
    absolute = pe in ("absolute", "conditional_absolute", "time_alibi")
    return {"a position table": absolute,
            "PEGs": pe in ("conditional", "conditional_absolute"),
            "ALiBi bias matrices": pe in ("alibi_2d", "time_alibi"),
            "relative tables": pe == "learned_relative"}


def _kind_of(has):
    """The kind whose position layers are `has`, or None."""
    for pe in PE_KINDS:
        if _position_parts(pe) == has:
            return pe
    return None


def _listing(parts):
    return " and ".join(part for part, present in parts.items() if present) or "none of them"


_STRUCTURAL = {"ExpandDims", "Reshape", "Squeeze", "SliceTensor", "SpecAugment"}
_FRONT_END = {"Input", "Spectrogram", "MelScale", "Log", "TranslateRange", "ExternalNormalize",
              "Activation"}
_FRONT_END_ORDER = ["Spectrogram", "MelScale", "Log"]
# The kind each `relative_attention_type` of the original blocks belongs to (None: any kind
# without relative attention).
_ATTENTION_KINDS = {None: None, "alibi2d": "alibi_2d", "huang2d": "learned_relative",
                    "alibi2d_timeonly": "time_alibi"}


def _config_options(layers, source):
    """What an original config states about the model, as keyword values: `samples`
    (input), `frontend`, `stats`, `patch_size` (read as dienen has since 2021-09-07: frames,
    bins), `shape_2d` (grid of the position layers, or None), `pe`, `num_heads`,
    `hidden_dim`, `num_layers`, `intermediate_dim`, `peg_after` (block indices),
    `epsilon`, `classes`, `activation`. Layers the paper's models do not have are errors."""
    options = _read_config_layers(layers, source)
    blocks = options["blocks"]
    attention, num_heads, intermediate_dim = _block_settings(blocks, source)
    shape_2d = _config_grid(blocks, attention, options["peg_after"], source)
    pe = _config_kind(attention, bool(options["peg_after"]), options["table"], source)
    frontend, stats = _config_front_end(options)
    (hidden, _), (classes, activation) = options["dense"]
    return {
        "samples": options.get("samples"), "frontend": frontend, "stats": stats,
        "patch_size": options["patch_size"], "shape_2d": shape_2d, "pe": pe,
        "num_heads": num_heads, "hidden_dim": hidden, "num_layers": len(blocks),
        "intermediate_dim": intermediate_dim,
        "peg_after": [index for index, _ in options["peg_after"]],
        "epsilon": options["epsilon"], "classes": classes, "activation": activation,
    }


def _setting(params, key, source, default=None):
    """A layer parameter of a config; a `!var` the config's defaults lack is an error."""
    value = params.get(key, default)
    if isinstance(value, str) and value.startswith("!"):
        raise ValueError(f"{source}: {key} is {value!r}, which the config does not set (a "
                         "!var its defaults lack)")
    return value


def _refuse(cls, why, source):
    raise ValueError(f"{source}: {cls} {why}: not a model the converter reproduces")


def _read_config_layers(layers, source):
    """The settings of a config's layers, in a dict (`samples`, `stft`, `mel`,
    `log_offset`, `scaling`, `relu`, `patch_size`, `dense`, `table`, `epsilon`, `blocks`,
    `peg_after`), checked to hold the paper's front end, patches, blocks and output."""
    options = {"peg_after": [], "blocks": [], "table": None, "relu": False, "scaling": None,
               "dense": [], "patch_size": None, "epsilon": None}
    for cls, params in layers:
        if cls in _FRONT_END:
            _read_front_end_layer(cls, params, options, source)
        elif cls not in _STRUCTURAL:
            _read_model_layer(cls, params, options, source)
    if [cls for cls, _ in layers if cls in _FRONT_END_ORDER] != _FRONT_END_ORDER:
        raise ValueError(f"{source}: the front end is not Spectrogram, MelScale, Log: not "
                         "a model of the paper's code")
    if not options["blocks"] or len(options["dense"]) != 2 or not options["patch_size"]:
        raise ValueError(f"{source}: not the paper's AST (GetPatches, a patch projection, "
                         "TransformerBlocks and an output Dense)")
    return options


def _read_front_end_layer(cls, params, options, source):
    """Reads a layer of the waveform-to-features part (one of `_FRONT_END`) into `options`."""
    if cls == "Input":
        shape = _setting(params, "shape", source, [None])
        options["samples"] = _number(shape[0], "Input shape", source)
    elif cls == "Spectrogram":
        if _setting(params, "calculate", source, "magnitude") != "magnitude" or any(
                _setting(params, key, source) for key in ("window", "pad_end", "discard_nyquist")):
            _refuse(cls, f"with {params}", source)
        options["stft"] = tuple(_number(_setting(params, key, source), f"Spectrogram {key}",
                                        source) for key in ("win_size", "hop_size", "fft_size"))
    elif cls == "MelScale":
        options["mel"] = {key: _number(_setting(params, key, source, default), f"MelScale {key}",
                                       source)
                          for key, default in (("num_mel_bins", 64), ("sample_rate", None),
                                               ("lower_edge_hertz", 125.0),
                                               ("upper_edge_hertz", 3800.0))}
    elif cls == "Log":
        if _setting(params, "base", source):
            _refuse(cls, f"with base {params['base']}", source)
        options["log_offset"] = float(_setting(params, "offset", source, 1e-9))
    elif cls == "TranslateRange":
        (a, b), (c, d) = (_setting(params, "original_range", source),
                          _setting(params, "target_range", source))
        slope = (d - c) / (b - a)  # y = (x - a) * slope + c = (x - low) / (high - low)
        options["scaling"] = (a - c / slope, a - c / slope + 1.0 / slope)
    elif cls == "ExternalNormalize":
        mean = float(_setting(params, "mean", source))
        scale = float(_setting(params, "scale", source))
        options["scaling"] = (mean, mean + scale)
    elif options["dense"]:  # an Activation after the patch projection
        _refuse(cls, "layer", source)
    else:
        if (_setting(params, "activation", source) != "relu" or options["patch_size"]
                or "log_offset" not in options):
            _refuse(cls, f"{params.get('activation')!r} in the front end", source)
        options["relu"] = True


def _read_model_layer(cls, params, options, source):
    """Reads a layer from the patches to the output into `options`; layers the paper's
    models do not have, or have otherwise set, are errors."""
    if cls == "GetPatches":
        if _setting(params, "mode", source, "ud") != "ud" or _setting(params, "return_2d",
                                                                       source):
            _refuse(cls, f"with {params}", source)
        options["patch_size"] = tuple(_setting(params, "patch_size", source))
    elif cls == "Dense":
        options["dense"].append((_setting(params, "units", source),
                                 _setting(params, "activation", source)))
    elif cls == "ZeroPadding1D":
        if list(_setting(params, "padding", source, [1, 1])) != [1, 0]:
            _refuse(cls, f"padding {params.get('padding')}", source)
    elif cls == "PositionalEmbeddingLookup":
        if (_setting(params, "repeat", source, 1) != 1
                or not _setting(params, "cls_token", source, True)):
            _refuse(cls, f"with {params}", source)
        options["table"] = _number(_setting(params, "tile", source, 1), "tile", source)
    elif cls == "LayerNormalization":
        options["epsilon"] = float(_setting(params, "epsilon", source, 1e-3))
    elif cls == "TransformerBlock":
        if (_setting(params, "use_bias", source, False)
                or _setting(params, "rezero", source, False)
                or _setting(params, "conv_kernel_size", source, 1) != 1
                or not _setting(params, "apply_softmax", source, True)
                or _setting(params, "sparse_pattern", source) is not None
                or not _setting(params, "share_pe_heads", source, True)
                or not _setting(params, "cls_token", source, True)):
            _refuse(cls, "with biases, rezero, convolutions, sparse or per-head relative "
                    "attention, or without [CLS]", source)
        options["blocks"].append(params)
    elif cls == "PEG":
        if _setting(params, "kernel_size", source, 3) != 3 or not options["blocks"]:
            _refuse(cls, "other than a 3 x 3 PEG after a block", source)
        options["peg_after"].append((len(options["blocks"]) - 1,
                                     tuple(_setting(params, "shape_2d", source))))
    else:
        _refuse(cls, "layer", source)


def _block_settings(blocks, source):
    """`(relative attention type or None, heads, feed-forward size)`, which every block of
    the original models shares."""
    kinds = {_setting(b, "relative_attention_type", source, False) or None for b in blocks}
    heads = {_setting(b, "n_heads", source, 8) for b in blocks}
    ff = {_setting(b, "ff_dim", source, 2048) for b in blocks}
    if len(kinds) > 1 or len(heads) > 1 or len(ff) > 1:
        raise ValueError(f"{source}: blocks differ in attention, heads or feed-forward size")
    (attention,), (num_heads,), (intermediate_dim,) = kinds, heads, ff
    return attention, num_heads, intermediate_dim


def _config_grid(blocks, attention, peg_after, source):
    """The `(time, freq)` grid the relative attention and the PEGs lay the patches out on,
    or None when the config has neither; they must agree."""
    shapes = {tuple(_setting(b, "shape_2d", source)) for b in blocks if attention}
    shapes |= {shape for _, shape in peg_after}
    if len(shapes) > 1:
        raise ValueError(f"{source}: the position layers lay the patches out differently "
                         f"({sorted(shapes)})")
    return shapes.pop() if shapes else None


def _config_kind(attention, pegs, tile, source):
    """The positional encoding of a config from its position layers: the blocks' relative
    attention, PEGs and the position table (`tile`: tiled over time only in time ALiBi)."""
    has = {"a position table": tile is not None, "PEGs": pegs,
           "ALiBi bias matrices": attention in ("alibi2d", "alibi2d_timeonly"),
           "relative tables": attention == "huang2d"}
    pe = _kind_of(has)
    if (pe is None or _ATTENTION_KINDS.get(attention, "unknown") not in (None, pe)
            or (pe == "time_alibi") != (tile is not None and tile > 1)):
        raise ValueError(f"{source}: attention {attention!r} with PEGs={pegs} and position "
                         f"table={tile is not None}: not one of the paper's kinds")
    return pe


def _config_front_end(options):
    """`(FrontEndConfig, NormalizationStats)` of the front end a config states (no
    TranslateRange or ExternalNormalize: no scaling)."""
    mel = options["mel"]
    frame_length, frame_step, fft_length = options["stft"]
    frontend = FrontEndConfig(
        sample_rate=int(mel["sample_rate"]), frame_length=frame_length, frame_step=frame_step,
        fft_length=fft_length, num_mel_bins=int(mel["num_mel_bins"]),
        lower_edge_hertz=float(mel["lower_edge_hertz"]),
        upper_edge_hertz=float(mel["upper_edge_hertz"]), log_offset=options["log_offset"])
    low, high = options["scaling"] or (0.0, 1.0)
    return frontend, NormalizationStats(low=low, high=high, relu=options["relu"],
                                        frontend=frontend)


def describe_front_end(frontend, stats):
    """The scaling of a front end in words, e.g. `log(x + 0.001), (x + 5.61) / 7.68, ReLU`."""
    offset = -stats.low
    shift = f"x + {offset:g}" if offset >= 0 else f"x - {-offset:g}"
    return (f"log(mel + {frontend.log_offset:g}), ({shift}) / {stats.high - stats.low:.6g}, "
            + ("ReLU" if stats.relu else "no ReLU"))


class _Weights:
    """A checkpoint's arrays by role, checked against the original model's layout: `kernel`
    and `bias` of the patch projection, `blocks` (`_block_arrays` of each TransformerBlock),
    `pegs` (`[(name, arrays)]`, the i-th after block i), `table` (the position table's
    arrays, or None), `pe` (the kind, read from the position layers when not given),
    `probs` (the output Dense's kernel and bias) and `r_matrix` (the first block's ALiBi
    bias, or None)."""

    def __init__(self, layers, pe, source):
        self.layers, self.source = layers, source
        self.kernel, self.bias = self.get("patches_projection")
        block_names = [name for name, arrays in layers.items()
                       if "TransformerBlock" in name and arrays]
        self.blocks = [_block_arrays(name, layers[name], source) for name in block_names]
        if not self.blocks:
            raise ValueError(f"{source}: no TransformerBlock layers (not a checkpoint of the "
                             "paper's AST?)")
        self.pegs = [(name, arrays) for name, arrays in layers.items()
                     if "/PEG" in name and arrays]
        for index, (name, _) in enumerate(self.pegs):
            if name.split("/")[0] != block_names[index].split("/")[0]:
                raise ValueError(f"{source}: PEG {name!r} does not follow block {index} "
                                 f"({block_names[index]!r})")
        self.table = layers.get("add_positional_embedding") or None
        self.r_matrix = self.blocks[0].get("r_matrix")
        self.pe = self._kind(pe)
        self.probs = self.get("probs/Dense")

    def get(self, name):
        """The arrays of layer `name`; a layer without any is an error."""
        if not self.layers.get(name):
            raise ValueError(f"{self.source}: no weights of layer {name!r} (not a checkpoint "
                             "of the paper's AST?)")
        return self.layers[name]

    def _kind(self, pe):
        """`pe`, or when None the kind the position layers tell; they must be its."""
        has = {"a position table": self.table is not None, "PEGs": bool(self.pegs),
               "ALiBi bias matrices": self.r_matrix is not None,
               "relative tables": "rpe_w" in self.blocks[0]}
        if pe is None:
            pe = _kind_of(has)
            if pe is None:
                raise ValueError(f"{self.source}: has {_listing(has)}: not one of the paper's "
                                 "kinds")
        if has != _position_parts(pe):
            raise ValueError(f"{self.source}: has {_listing(has)}; a {pe!r} model has "
                             f"{_listing(_position_parts(pe))} (of a position table, PEGs, "
                             "ALiBi bias matrices, relative tables): is --pe right?")
        return pe

    @property
    def hidden(self):
        return self.kernel.shape[1]

    @property
    def relative_tables(self):
        """The first block's learned relative tables `(time, freq)`, or None."""
        block = self.blocks[0]
        return (block["rpe_w"], block["rpe_h"]) if "rpe_w" in block else None


def _alibi_options(r_matrix, num_heads, freq_patches, mode, source):
    """`(slope rule, [CLS] blocking)` whose bias is `r_matrix`, the stored ALiBi matrix."""
    from keras_astpe.layers.alibi import BLOCKED as OURS_BLOCKED
    from keras_astpe.layers.alibi import ALiBiBias

    length = r_matrix.shape[-1]
    stored_blocked = r_matrix <= BLOCKED
    for rule in ("code", "paper"):
        for blocking in ("time_heads", "none", "all_heads"):
            bias = ALiBiBias(num_heads, freq_patches, mode=mode, slopes=rule,
                             block_patches_to_cls=blocking)
            ours = np.asarray(bias(np.zeros((1, length, num_heads, 1), "float32")))[0]
            blocked = ours <= OURS_BLOCKED
            if (np.array_equal(blocked, stored_blocked)
                    and np.allclose(ours[~blocked], r_matrix[~blocked], rtol=1e-5, atol=1e-6)):
                return rule, blocking
    raise ValueError(f"{source}: the stored ALiBi bias is not that of either slope rule, "
                     "with or without the original [CLS] blocking")


class DienenConversion:
    """A converted model and what it took on trust: `model` (the `ASTClassifier`),
    `assumed` (sentences: each option neither the file nor a flag or config stated) and
    `summary` (what was read, in words)."""

    def __init__(self, model, assumed, summary):
        self.model, self.assumed, self.summary = model, tuple(assumed), summary


def convert_dienen(paths, pe=None, **kwargs):
    """The `ASTClassifier` of dienen checkpoints; see `dienen_conversion`."""
    return dienen_conversion(paths, pe, **kwargs).model


def dienen_conversion(paths, pe=None, *, config=None, patches=None, num_heads=None,
                      min_samples=None, class_names=None, activation="sigmoid"):
    """The model of one dienen checkpoint, or of the mean of several (SWA), with what it
    assumed.

    Args:
        paths: `.weights` or `.dnn` files of one model (several: averaged).
        pe: the positional encoding the model was trained with, one of `PE_KINDS`; None
            reads it from the file (its position layers tell every kind apart).
        config: the original architecture YAML of the run (a path), for `.weights` files;
            a `.dnn` file carries its own.
        patches: `"32x8"` or `"8x32"`, frames x mel bins of the patches the run cut; None
            reads the config's `GetPatches` as dienen has since 2021-09-07 (frames, bins),
            or without a config assumes the paper's 32 x 8.
        num_heads: attention heads when neither the checkpoint nor a config tells (every
            kind but the ALiBi and learned relative ones); default width / 64.
        min_samples: pad shorter clips with zeros to this many samples; None: the model's
            input (the config's, else the one its position layers are sized for, else the
            paper's 158,960); 0: score clips at their own length.
        class_names: names of the outputs, or None.
        activation: `"sigmoid"` (the original), `"softmax"` or None (logits).
    """
    if pe is not None and pe not in PE_KINDS:
        raise ValueError(f"Unknown positional encoding {pe!r}; expected one of {PE_KINDS}")
    if patches not in (None, "32x8", "8x32"):
        raise ValueError(f"Unknown patches {patches!r}; expected '32x8' or '8x32'")
    layers, source, architecture, config_source = _read_inputs(paths, config)
    stated = None if architecture is None else _config_options(architecture, config_source)
    weights = _Weights(layers, pe, source)
    assumed = []
    if stated:
        num_heads = _check_config(stated, weights, num_heads, activation, config_source,
                                  assumed)
    patch = _patch_size(patches, stated, weights, assumed)
    frontend, stats = ((stated["frontend"], stated["stats"]) if stated
                       else (FrontEndConfig(), ORIGINAL_STATS))
    frames, grid, layout, grid_patch = _grid(weights, stated, patch, frontend, config_source,
                                             assumed)
    num_heads = _num_heads(weights, stated, num_heads, config_source, assumed)
    alibi = None if weights.r_matrix is None else _alibi_options(
        weights.r_matrix, num_heads, grid[1], "2d" if weights.pe == "alibi_2d" else "time",
        source)
    if not stated:
        assumed.append("the paper's front end: " + describe_front_end(frontend, stats)
                       + " (the peg2/peg3 runs scaled otherwise: --config states it)")
    input_samples = frontend.num_samples(frames)
    if min_samples is None:
        min_samples = (stated["samples"] if stated else None) or input_samples
    converter = LogMelAudioConverter(frontend, stats, min_samples=min_samples or None,
                                     patch_layout=layout)
    if stated and stated["epsilon"] not in (None, 1e-6):
        raise ValueError(f"{config_source}: LayerNormalization epsilon {stated['epsilon']}; "
                         "the blocks of the original code use 1e-6")
    slopes, block_cls = alibi or ("code", "time_heads")
    backbone = _backbone(weights, num_heads, grid, grid_patch, slopes, block_cls)
    model = ASTClassifier(backbone, weights.probs[0].shape[1], activation=activation,
                          audio_converter=converter, class_names=class_names)
    _assign_all(model, weights)
    return DienenConversion(model, assumed, _summary(frontend, stats, patch, alibi, min_samples))


def _summary(frontend, stats, patch, alibi, min_samples):
    """What the conversion read, in words (`alibi`: the ALiBi slope rule and [CLS]
    blocking, or None)."""
    return (f"{describe_front_end(frontend, stats)}; patches {patch[0]} x {patch[1]}"
            + ("" if alibi is None
               else f" (ALiBi slopes {alibi[0]!r}, [CLS] blocked in {alibi[1]!r})")
            + (f"; short clips zero-padded to {min_samples:,} samples" if min_samples
               else "; clips scored at their own length"))


def _read_inputs(paths, config):
    """`(layers, source, architecture, config source)`: the mean weights of the checkpoint
    files, their name for messages, and the layer list of `config`, else of the first
    file's own config (None without one), with its name for messages."""
    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike))
                                    else paths)]
    if not paths:
        raise ValueError("no checkpoint given")
    read = [_read_file(p) for p in paths]
    layers = average_checkpoints([r[0] for r in read], paths)
    source = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} averaged)"
    if config is not None:
        return layers, source, read_architecture(config), os.fspath(config)
    return layers, source, read[0][1], f"{paths[0]} (its config)"


def _check_stated(what, config_value, file_value, config_source, source):
    if config_value != file_value:
        raise ValueError(f"{config_source}: {what} is {config_value}, the weights of "
                         f"{source} have {file_value}")


def _check_config(stated, weights, num_heads, activation, config_source, assumed):
    """The heads the config states; what it states must match the weights and the
    `num_heads` flag, and an output activation other than its own is listed as assumed."""
    for what, key, file_value in (
            ("the positional encoding", "pe", weights.pe),
            ("the width", "hidden_dim", weights.hidden),
            ("the number of blocks", "num_layers", len(weights.blocks)),
            ("the feed-forward size", "intermediate_dim", weights.blocks[0]["ff1"].shape[1]),
            ("the blocks followed by a PEG", "peg_after", list(range(len(weights.pegs)))),
            ("the number of classes", "classes", weights.probs[0].shape[1])):
        _check_stated(what, stated[key], file_value, config_source, weights.source)
    if num_heads is not None and num_heads != stated["num_heads"]:
        raise ValueError(f"num_heads={num_heads}, but {config_source} has "
                         f"{stated['num_heads']} heads")
    if stated["activation"] != (activation or "linear"):
        assumed.append(f"output activation {activation} (as asked; the config's is "
                       f"{stated['activation']})")
    return stated["num_heads"]


def _patch_size(patches, stated, weights, assumed):
    """`(frames, bins)` of the patches: the flag's, else the config's `GetPatches`, else
    the paper's 32 x 8; the patch projection must take that many values."""
    if patches is not None:
        patch = (8, 32) if patches == "8x32" else (32, 8)
    elif stated:
        patch = stated["patch_size"]
        if patch in ((32, 8), (8, 32)):
            other = "x".join(map(str, patch[::-1]))
            assumed.append(f"{patch[0]} x {patch[1]} patches (frames x bins: the config's "
                           f"GetPatches patch_size {list(patch)}, as dienen has read it since "
                           f"2021-09-07; dienen before cut {other.replace('x', ' x ')}: "
                           f"--patches={other})")
    else:
        patch = (32, 8)
        assumed.append("32 x 8 patches (frames x bins, the paper's; dienen before 2021-09-07 "
                       "cut 8 x 32 with the same weight shapes: --patches=8x32)")
    rows = weights.kernel.shape[0]
    if rows != patch[0] * patch[1]:
        raise ValueError(f"{weights.source}: patches_projection takes {rows} values, not "
                         f"{patch[0]} x {patch[1]} patches")
    return patch


def _grid(weights, stated, patch, frontend, config_source, assumed):
    """`(frames, (time, freq), patch layout, grid patch size)`: the input's frames and the
    grid the position layers lay the patches on, from the config, else the weights, else
    the paper's. dienen's early 8 x 32 patches on the paper's grid take the `"8x32"`
    layout (32 x 8 patches of the same values)."""
    source = weights.source
    num_tokens = _position_tokens(weights)
    shape_2d = stated["shape_2d"] if stated else None
    if shape_2d is None and weights.relative_tables is not None:
        shape_2d = tuple((table.shape[0] + 1) // 2 for table in weights.relative_tables)
    frames = _input_frames(stated, frontend, shape_2d, num_tokens, assumed)
    bins = frontend.num_mel_bins
    patch_grid = (frames // patch[0], bins // patch[1])
    paper_grid = (frames // 32, bins // 8)
    if shape_2d is None:
        shape_2d = paper_grid if patch == (8, 32) else patch_grid
    shape_2d = tuple(shape_2d)
    layout, grid_patch = "plain", patch
    if patch == (8, 32) and shape_2d == paper_grid != patch_grid:
        layout, grid_patch = "8x32", (32, 8)
    elif shape_2d != patch_grid:
        raise ValueError(f"{config_source if stated else source}: position layers on a "
                         f"{shape_2d[0]} x {shape_2d[1]} grid for {patch_grid[0]} x "
                         f"{patch_grid[1]} patches of {patch[0]} x {patch[1]}: not a layout "
                         "the converter reproduces")
    time, freq = shape_2d
    if num_tokens is not None and num_tokens != time * freq:
        raise ValueError(f"{source}: the position layers hold {num_tokens} patches, the "
                         f"grid is {time} x {freq}")
    if weights.pe == "time_alibi" and weights.table[0].shape[0] != 1 + freq:
        raise ValueError(f"{source}: the time ALiBi table has {weights.table[0].shape[0]} "
                         f"rows, not [CLS] and {freq} frequency bands")
    return frames, shape_2d, layout, grid_patch


def _position_tokens(weights):
    """The patches the position table or the ALiBi bias is sized for, or None."""
    if weights.table is not None and weights.pe != "time_alibi":
        return weights.table[0].shape[0] - 1
    if weights.r_matrix is not None:
        return weights.r_matrix.shape[-1] - 1
    return None


def _input_frames(stated, frontend, shape_2d, num_tokens, assumed):
    """The frames of the model's input: of the config's input, else of the grid or the
    patches the position layers are sized for (32-frame rows), else the paper's 992."""
    if stated and stated["samples"] is not None:
        return frontend.num_frames(stated["samples"])
    if shape_2d is not None:
        return shape_2d[0] * 32
    if num_tokens is not None:
        return num_tokens // (frontend.num_mel_bins // 8) * 32
    assumed.append("an input of 158,960 samples (992 frames, 10 s: the paper's; the "
                   "weights do not tell: --config states it)")
    return 992


def _num_heads(weights, stated, num_heads, config_source, assumed):
    """The attention heads: the ALiBi bias's or the relative tables' (which must match the
    config's), else `num_heads` (the config's or the flag's), else width / 64."""
    relative = weights.relative_tables
    file_heads = (weights.r_matrix.shape[0] if weights.r_matrix is not None
                  else weights.hidden // relative[0].shape[-1] if relative is not None
                  else None)
    if file_heads is not None:
        if stated:
            _check_stated("the number of heads", stated["num_heads"], file_heads,
                          config_source, weights.source)
        return file_heads
    if num_heads is None:
        num_heads = max(1, weights.hidden // HEAD_DIM)
        assumed.append(f"{num_heads} attention heads (width / 64, the paper's head size; "
                       "the weights do not tell: --num_heads)")
    return num_heads


def _backbone(weights, num_heads, grid, grid_patch, slopes, block_cls):
    """The `ASTBackbone` of the original model: the paper's preset at the checkpoint's
    sizes, with the original's options (no final norm or biases, its ALiBi and PEGs)."""
    time, freq = grid
    return ASTBackbone(
        position_encoding=weights.pe, **dict(
            get_preset("ast-pe"), hidden_dim=weights.hidden, num_layers=len(weights.blocks),
            num_heads=num_heads, intermediate_dim=weights.blocks[0]["ff1"].shape[1],
            num_frames=time * grid_patch[0], num_mel_bins=freq * grid_patch[1],
            patch_size=grid_patch, layer_norm_epsilon=1e-6, final_norm=False,
            use_feedforward_bias=False, use_attention_bias=False, alibi_slopes=slopes,
            alibi_block_cls=block_cls, num_peg_layers=len(weights.pegs) or 5,
            peg_cls_embedding=bool(weights.pegs) and len(weights.pegs[0][1]) == 3))


def _assign_all(model, weights):
    """Sets every variable of `model` from the checkpoint's arrays."""
    from keras_astpe.conversion.vit_weights import _assign

    source = weights.source
    gamma, beta = weights.get("LayerNormalization_0")
    backbone = model.backbone
    patch = backbone.patch_embedding.patch_size  # its values are flattened frame by frame
    kernel, bias = weights.kernel, weights.bias
    _assign(backbone.patch_embedding.projection.kernel, kernel.reshape(*patch, 1, -1),
            f"{source} patches_projection")
    _assign(backbone.patch_embedding.projection.bias, bias, f"{source} patches_projection")
    cls_token = np.zeros(kernel.shape[1], np.float32)  # ZeroPadding1D
    if weights.table is not None:
        cls_token = cls_token + weights.table[0][0]  # the position of [CLS]
        grid = backbone.position_embedding
        rows = weights.table[0][1:]
        if not grid.frequency_only:
            rows = rows.reshape(*backbone.grid_shape, -1)
        _assign(grid.embeddings, rows, f"{source} add_positional_embedding")
    _assign(backbone.class_token.token, cls_token[None, None], f"{source} [CLS]")
    _assign(backbone.embedding_norm.gamma, gamma, f"{source} LayerNormalization_0")
    _assign(backbone.embedding_norm.beta, beta, f"{source} LayerNormalization_0")
    for index, (block, arrays) in enumerate(zip(backbone.blocks, weights.blocks, strict=True)):
        what = f"{source} block {index}"
        attention = block.attention
        heads, head_dim = attention.num_heads, attention.key_dim
        for dense, key in ((attention.query_dense, "wq"), (attention.key_dense, "wk"),
                           (attention.value_dense, "wv")):
            _assign(dense.kernel, arrays[key].reshape(-1, heads, head_dim), what)
        _assign(attention.output_dense.kernel, arrays["wo"].reshape(heads, head_dim, -1), what)
        _assign(block.attention_norm.gamma, arrays["ln1_gamma"], what)
        _assign(block.attention_norm.beta, arrays["ln1_beta"], what)
        _assign(block.feedforward_norm.gamma, arrays["ln2_gamma"], what)
        _assign(block.feedforward_norm.beta, arrays["ln2_beta"], what)
        _assign(block.feedforward_intermediate.kernel, arrays["ff1"], what)
        _assign(block.feedforward_output.kernel, arrays["ff2"], what)
        if "rpe_w" in arrays:
            relative = attention.position_bias
            _assign(relative.time_embeddings, arrays["rpe_w"], what)
            _assign(relative.freq_embeddings, arrays["rpe_h"], what)
    for peg, (name, arrays) in zip(backbone.pegs, weights.pegs, strict=True):
        what = f"{source} {name}"
        if len(arrays) == 3:
            _assign(peg.cls_position, arrays[0], what)
        _assign(peg.conv.kernel, arrays[-2], what)
        _assign(peg.conv.bias, arrays[-1], what)
    kernel, bias = weights.probs
    _assign(model.head.kernel, kernel, f"{source} probs/Dense")
    _assign(model.head.bias, bias, f"{source} probs/Dense")
