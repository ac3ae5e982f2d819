"""The paper's own trained models: `dienen` checkpoints -> a keras-astpe `ASTClassifier`.

The study's code (habla-liaa/ast-pe on mrpep/dienen) saves models with joblib:

- `.weights` training checkpoints: `{layer name: [layer.get_weights(), [variable
  names]]}` for every layer of the Keras model (layers without weights hold `[[], []]`);
- `.dnn` whole models: a pickled `dienen.Model` whose state holds `weights`, `{layer name:
  layer.get_weights()}`, among its configs and optimizer state.

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
no feed-forward biases, [CLS] = its position (or zero), ALiBi slopes and [CLS] blocking
read from the stored bias matrix (the code's rule; the time heads block [CLS]), relative
rows by key minus query, the PEG [CLS] embedding when the first PEG has one.
"""

import os
import threading

import numpy as np

from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.backbone import ASTBackbone
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.models.position_encodings import PE_KINDS
from keras_astpe.models.presets import get_preset
from keras_astpe.normalization import NormalizationStats

PATCH_SIZE = (32, 8)  # frames x mel bins, the paper's
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
    kahnfigh's `Config`, ...): keeps what the pickle gives it, runs nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args
        self.items_list = []

    def __setstate__(self, state):
        self.state = state

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
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    content = _load_pickle(path)
    state = getattr(content, "state", None)
    if isinstance(state, dict) and isinstance(state.get("weights"), dict):
        layers = state["weights"]  # a .dnn: {layer: get_weights()}
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
    return checkpoint


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


def _listing(parts):
    return " and ".join(part for part, present in parts.items() if present) or "none of them"


def _alibi_options(r_matrix, num_heads, freq_patches, mode, source):
    """The slope rule whose bias (with the original's [CLS] blocking) is `r_matrix`."""
    from keras_astpe.layers.alibi import BLOCKED as OURS_BLOCKED
    from keras_astpe.layers.alibi import ALiBiBias

    length = r_matrix.shape[-1]
    for rule in ("code", "paper"):
        bias = ALiBiBias(num_heads, freq_patches, mode=mode, slopes=rule,
                         block_patches_to_cls="time_heads")
        ours = np.asarray(bias(np.zeros((1, length, num_heads, 1), "float32")))[0]
        blocked = ours <= OURS_BLOCKED
        if (np.array_equal(blocked, r_matrix <= BLOCKED)
                and np.allclose(ours[~blocked], r_matrix[~blocked], rtol=1e-5, atol=1e-6)):
            return rule
    raise ValueError(f"{source}: the stored ALiBi bias is neither slope rule with the "
                     "original [CLS] blocking")


def convert_dienen(paths, pe, *, class_names=None, num_heads=None, activation="sigmoid"):
    """The `ASTClassifier` of one dienen checkpoint, or of the mean of several (SWA).

    Args:
        paths: `.weights` or `.dnn` files of one model (several: averaged).
        pe: the positional encoding the model was trained with, one of `PE_KINDS`.
        class_names: names of the outputs, or None.
        num_heads: attention heads when the checkpoint does not tell (every kind but the
            ALiBi and learned relative ones); default width / 64 (the paper: 12).
        activation: `"sigmoid"` (the original), `"softmax"` or None (logits).
    """
    if pe not in PE_KINDS:
        raise ValueError(f"Unknown positional encoding {pe!r}; expected one of {PE_KINDS}")
    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike))
                                    else paths)]
    if not paths:
        raise ValueError("no checkpoint given")
    layers = average_checkpoints([read_checkpoint(p) for p in paths], paths)
    source = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} averaged)"

    def get(name):
        if not layers.get(name):
            raise ValueError(f"{source}: no weights of layer {name!r} (not a checkpoint of "
                             "the paper's AST?)")
        return layers[name]

    kernel, bias = get("patches_projection")
    hidden = kernel.shape[1]
    if kernel.shape[0] != PATCH_SIZE[0] * PATCH_SIZE[1]:
        raise ValueError(f"{source}: patches_projection takes {kernel.shape[0]} values, not "
                         f"the paper's {PATCH_SIZE[0]} x {PATCH_SIZE[1]} patches")
    blocks = [_block_arrays(name, arrays, source) for name, arrays in layers.items()
              if "TransformerBlock" in name and arrays]
    if not blocks:
        raise ValueError(f"{source}: no TransformerBlock layers (not a checkpoint of the "
                         "paper's AST?)")
    pegs = [(name, arrays) for name, arrays in layers.items() if "/PEG" in name and arrays]
    block_names = [name for name, arrays in layers.items()
                   if "TransformerBlock" in name and arrays]
    for index, (name, _) in enumerate(pegs):
        if name.split("/")[0] != block_names[index].split("/")[0]:
            raise ValueError(f"{source}: PEG {name!r} does not follow block {index} "
                             f"({block_names[index]!r})")
    table = layers.get("add_positional_embedding") or None
    has = {"a position table": table is not None, "PEGs": bool(pegs),
           "ALiBi bias matrices": "r_matrix" in blocks[0],
           "relative tables": "rpe_w" in blocks[0]}
    if has != _position_parts(pe):
        raise ValueError(f"{source}: has {_listing(has)}; a {pe!r} model has "
                         f"{_listing(_position_parts(pe))} (of a position table, PEGs, ALiBi "
                         "bias matrices, relative tables): is --pe right?")

    freq = 64 // PATCH_SIZE[1]
    time = 992 // PATCH_SIZE[0]
    if table is not None and pe != "time_alibi":
        time = (table[0].shape[0] - 1) // freq
    elif "r_matrix" in blocks[0]:
        time = (blocks[0]["r_matrix"].shape[-1] - 1) // freq
    elif "rpe_w" in blocks[0]:
        time = (blocks[0]["rpe_w"].shape[0] + 1) // 2
    if "r_matrix" in blocks[0]:
        num_heads = blocks[0]["r_matrix"].shape[0]
    elif "rpe_w" in blocks[0]:
        num_heads = hidden // blocks[0]["rpe_w"].shape[-1]
    num_heads = num_heads or hidden // HEAD_DIM
    slopes = "code"
    if "r_matrix" in blocks[0]:
        mode = "2d" if pe == "alibi_2d" else "time"
        slopes = _alibi_options(blocks[0]["r_matrix"], num_heads, freq, mode, source)
    config = dict(
        get_preset("ast-pe"), hidden_dim=hidden, num_layers=len(blocks), num_heads=num_heads,
        intermediate_dim=blocks[0]["ff1"].shape[1], num_frames=time * PATCH_SIZE[0],
        final_norm=False, use_feedforward_bias=False, use_attention_bias=False,
        alibi_slopes=slopes, alibi_block_cls="time_heads",
        relative_row_order="key_minus_query", num_peg_layers=len(pegs) or 5,
        peg_cls_embedding=bool(pegs) and len(pegs[0][1]) == 3,
    )
    backbone = ASTBackbone(position_encoding=pe, **config)
    probs_kernel, probs_bias = get("probs/Dense")
    model = ASTClassifier(backbone, probs_kernel.shape[1], activation=activation,
                          audio_converter=LogMelAudioConverter(stats=ORIGINAL_STATS),
                          class_names=class_names)
    get("LayerNormalization_0")
    _assign_all(model, layers, blocks, pegs, table, kernel, bias, source)
    return model


def _assign_all(model, layers, blocks, pegs, table, kernel, bias, source):
    from keras_astpe.conversion.vit_weights import _assign

    backbone = model.backbone
    _assign(backbone.patch_embedding.projection.kernel,
            kernel.reshape(*PATCH_SIZE, 1, -1), f"{source} patches_projection")
    _assign(backbone.patch_embedding.projection.bias, bias, f"{source} patches_projection")
    cls_token = np.zeros(kernel.shape[1], np.float32)  # ZeroPadding1D
    if table is not None:
        cls_token = cls_token + table[0][0]  # the position of [CLS]
        grid = backbone.position_embedding
        rows = table[0][1:]
        if not grid.frequency_only:
            rows = rows.reshape(*backbone.grid_shape, -1)
        _assign(grid.embeddings, rows, f"{source} add_positional_embedding")
    _assign(backbone.class_token.token, cls_token[None, None], f"{source} [CLS]")
    gamma, beta = layers["LayerNormalization_0"]
    _assign(backbone.embedding_norm.gamma, gamma, f"{source} LayerNormalization_0")
    _assign(backbone.embedding_norm.beta, beta, f"{source} LayerNormalization_0")
    for index, (block, arrays) in enumerate(zip(backbone.blocks, blocks, strict=True)):
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
    for peg, (name, arrays) in zip(backbone.pegs, pegs, strict=True):
        what = f"{source} {name}"
        if len(arrays) == 3:
            _assign(peg.cls_position, arrays[0], what)
        _assign(peg.conv.kernel, arrays[-2], what)
        _assign(peg.conv.bias, arrays[-1], what)
    kernel, bias = layers["probs/Dense"]
    _assign(model.head.kernel, kernel, f"{source} probs/Dense")
    _assign(model.head.bias, bias, f"{source} probs/Dense")
