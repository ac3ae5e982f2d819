"""ALiBi: fixed attention biases that fall linearly with time or frequency distance."""

import keras
import numpy as np
from keras import ops

from keras_astpe.layers.grid import patch_coordinates

ALIBI_MODES = ("2d", "time")
SLOPE_RULES = ("paper", "code")
# Which heads block patch queries from the [CLS] key. Configs saved before this option had
# three values used a bool: True meant every head, False none.
CLS_BLOCKING = ("time_heads", "all_heads", "none")
BLOCKED = -1e9


def check_cls_blocking(value, name="block_patches_to_cls"):
    """The argument `name`, checked to be one of `CLS_BLOCKING`."""
    if value not in CLS_BLOCKING:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {CLS_BLOCKING}.")
    return value


def alibi_slopes(num_heads, heads_per_axis, rule="paper"):
    """Slopes `m` of the heads that share one axis.

    `"paper"`: m_h = 0.5 ** (16 h / N_h) for h = 1..heads_per_axis, N_h = heads in the
    layer (the formula of the paper's text). `"code"`: 2 ** -linspace(1, 8, heads_per_axis)
    (the original code). For `alibi_2d` with 12 heads both give 6 slopes from ~0.5 down to
    2**-8; for `time_alibi` the paper's rule goes down to 2**-16.
    """
    if rule == "paper":
        h = np.arange(1, heads_per_axis + 1)
        return 0.5 ** (16.0 * h / num_heads)
    if rule == "code":
        return 2.0 ** -np.linspace(1.0, 8.0, heads_per_axis)
    raise ValueError(f"Unknown ALiBi slope rule {rule!r}; expected one of {SLOPE_RULES}.")


@keras.saving.register_keras_serializable(package="keras_astpe")
class ALiBiBias(keras.layers.Layer):
    """The fixed matrix R of ALiBi for a [CLS] + time-major patch sequence.

    `mode="2d"` (`alibi_2d`): the first half of the heads use R = -m |dt|, the second
    half R = -m |df|. `mode="time"` (`time_alibi`): every head uses R = -m |dt|.
    [CLS] is at distance 0 from every token and attends to every patch. Patch queries
    are blocked from the [CLS] key (R = -1e9 in its column; the code's -1e9 m is the
    same after the softmax) in the heads chosen by
    `block_patches_to_cls`: `"time_heads"` (default) does what the original code does,
    which corrects its time-distance matrix alone, so in `alibi_2d` the time heads block
    [CLS] and the frequency heads let patches attend it with R = 0 (in `time_alibi` every
    head is a time head); `"all_heads"` blocks it everywhere, `"none"` nowhere. The paper
    is silent on [CLS]. R is added to the logits before the 1/sqrt(d) scaling. Other
    prefix tokens (AST's distillation token, `num_prefix_tokens=2`) are treated as [CLS]
    is: at distance 0, and blocked for patch queries where [CLS] is.

    Called on the queries `[batch, length, heads, head_dim]` (only their length is used),
    it returns `scale` R as `[1, heads, length, length]` in float32, except that blocked
    entries are -1e9 whatever the scale (the same after the softmax).

    Args:
        num_heads: attention heads of the layer.
        freq_patches: frequency bands F of the patch grid.
        mode: `"2d"` or `"time"`.
        slopes: `"paper"` or `"code"`, see `alibi_slopes`.
        block_patches_to_cls: heads that mask the [CLS] column for patch queries,
            `"time_heads"`, `"all_heads"` or `"none"` (a bool from an older config: True
            is `"all_heads"`, False `"none"`).
        num_prefix_tokens: tokens before the patches ([CLS], and a distillation token).
    """

    def __init__(self, num_heads, freq_patches, mode="2d", slopes="paper",
                 block_patches_to_cls="time_heads", num_prefix_tokens=1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in ALIBI_MODES:
            raise ValueError(f"Unknown ALiBi mode {mode!r}; expected one of {ALIBI_MODES}.")
        if mode == "2d" and num_heads % 2:
            raise ValueError(f"alibi_2d splits the heads between time and frequency: "
                             f"num_heads must be even, got {num_heads}.")
        self.num_heads = int(num_heads)
        self.freq_patches = int(freq_patches)
        self.mode = mode
        self.slopes = slopes
        self.block_patches_to_cls = check_cls_blocking(block_patches_to_cls)
        self.num_prefix_tokens = int(num_prefix_tokens)
        if mode == "2d":
            half = alibi_slopes(num_heads, num_heads // 2, slopes)
            head_slopes, uses_time = np.concatenate([half, half]), np.arange(num_heads) < half.size
        else:
            head_slopes, uses_time = alibi_slopes(num_heads, num_heads, slopes), np.ones(num_heads)
        blocks_cls = {"time_heads": uses_time, "all_heads": np.ones(num_heads),
                      "none": np.zeros(num_heads)}[self.block_patches_to_cls]
        self._head_slopes = head_slopes.astype("float32")
        self._uses_time = uses_time.astype("float32")
        self._blocks_cls = np.asarray(blocks_cls, "float32")

    def call(self, query, scale=1.0):
        length, prefix = ops.shape(query)[1], self.num_prefix_tokens
        time, freq = patch_coordinates(length - prefix, self.freq_patches)
        dt = ops.cast(ops.abs(time[:, None] - time[None, :]), "float32")
        df = ops.cast(ops.abs(freq[:, None] - freq[None, :]), "float32")
        uses_time = ops.convert_to_tensor(self._uses_time)[:, None, None]
        distance = uses_time * dt[None] + (1.0 - uses_time) * df[None]
        bias = -(ops.convert_to_tensor(self._head_slopes) * scale)[:, None, None] * distance
        bias = ops.pad(bias, ((0, 0), (prefix, 0), (prefix, 0)))
        if self.block_patches_to_cls != "none":
            position = ops.arange(length, dtype="int32")
            patch_to_cls = ops.logical_and(position[:, None] >= prefix,
                                           position[None, :] < prefix)
            blocks_cls = ops.convert_to_tensor(self._blocks_cls)[:, None, None]
            bias = bias + blocks_cls * ops.where(patch_to_cls, BLOCKED, 0.0)[None]
        return bias[None]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            freq_patches=self.freq_patches,
            mode=self.mode,
            slopes=self.slopes,
            block_patches_to_cls=self.block_patches_to_cls,
            num_prefix_tokens=self.num_prefix_tokens,
        )
        return config
