"""The Audio Spectrogram Transformer encoder, with any of the study's positional encodings."""

import keras

from keras_astpe.layers import (
    AbsolutePositionEmbedding,
    ALiBiBias,
    ClassToken,
    LearnedRelativeBias,
    PatchEmbedding,
    PositionEncodingGenerator,
    TransformerEncoderBlock,
)
from keras_astpe.layers.alibi import check_cls_blocking
from keras_astpe.models.functional import FunctionalModel
from keras_astpe.models.position_encodings import get_position_encoding

# `PositionEncoding.attention_bias` -> `ALiBiBias` mode.
_ALIBI_MODES = {"alibi_2d": "2d", "alibi_time": "time"}


def _position_bias_factory(pe, num_heads, grid_shape, alibi_slopes, alibi_block_cls,
                           num_prefix_tokens):
    """`make(name)`: the attention's position bias of one block (None for the kinds
    without one)."""
    def make(name):
        if pe.attention_bias in _ALIBI_MODES:
            return ALiBiBias(num_heads, grid_shape[1], mode=_ALIBI_MODES[pe.attention_bias],
                             slopes=alibi_slopes, block_patches_to_cls=alibi_block_cls,
                             num_prefix_tokens=num_prefix_tokens, name=name)
        if pe.attention_bias == "learned_relative":
            return LearnedRelativeBias(grid_shape, num_prefix_tokens=num_prefix_tokens,
                                       name=name)
        return None

    return make


@keras.saving.register_keras_serializable(package="keras_astpe")
class ASTBackbone(FunctionalModel):
    """Log-mel features `[batch, frames, mel_bins]` -> token states `[batch, P + T * F, dim]`.

    The data path, top to bottom: patches (`PatchEmbedding`, a `T x F` grid) -> absolute
    position embeddings (full grid or frequency-only) -> flatten to a time-major sequence
    -> prepend the P prefix tokens ([CLS], then AST's distillation token if any) ->
    LayerNorm (`embedding_norm`) -> encoder blocks, whose attention may carry a position
    bias (ALiBi or learned relative), with a PEG after each of the first `num_peg_layers`
    blocks -> final LayerNorm (`final_norm`). State 0 is [CLS]. Which of these parts a
    positional encoding uses is its `PositionEncoding` in `POSITION_ENCODINGS`.

    The original AST (the `ast` preset) has a distillation token, no LayerNorm after the
    embeddings, a final LayerNorm, GELU and biases everywhere; its token order is
    frequency-major, ours time-major (a permutation: attention does not depend on the
    order once the position embeddings follow their tokens). The paper's original code
    has the embedding LayerNorm, no final LayerNorm and no feed-forward biases.

    Any number of frames from one patch up is accepted: learned tables are sized by the
    training grid (`num_frames`) and adapted to other lengths (see
    `AbsolutePositionEmbedding` and `LearnedRelativeBias`); fewer frames than one patch
    are an error that says how many one patch needs.

    Args:
        position_encoding: one of `PE_KINDS`.
        num_mel_bins: mel bins of the input features.
        num_frames: frames of the training clips (sizes the learned PE tables).
        patch_size, patch_stride: see `PatchEmbedding`.
        hidden_dim, num_layers, num_heads, intermediate_dim: encoder size.
        activation, dropout, norm_first, layer_norm_epsilon, use_attention_bias,
            use_feedforward_bias: see `TransformerEncoderBlock`.
        distillation_token: a second learned prefix token after [CLS] (AST, DeiT).
        embedding_norm: a LayerNorm on the embedded sequence, before the blocks (the
            paper's code: yes; AST: no).
        final_norm: a LayerNorm after the last block; None (the default) means one
            exactly when `norm_first` (pre-norm); the paper's code has none.
        num_peg_layers: blocks followed by a PEG in the conditional kinds (paper: 5).
        peg_cls_embedding: the first PEG also learns a [CLS] embedding.
        alibi_slopes: `"paper"` or `"code"` slope rule, see `alibi_slopes`.
        alibi_block_cls: heads in which patches cannot attend to [CLS] in the ALiBi kinds:
            `"time_heads"` (the original code: in `alibi_2d` the time heads block it, the
            frequency heads do not), `"all_heads"` or `"none"`; see `ALiBiBias`.
        dtype: dtype policy, e.g. `"mixed_bfloat16"`.
    """

    def __init__(self, position_encoding, num_mel_bins, num_frames, patch_size,
                 hidden_dim, num_layers, num_heads, intermediate_dim, patch_stride=None,
                 activation="relu", dropout=0.1, norm_first=True, layer_norm_epsilon=1e-6,
                 use_attention_bias=False, num_peg_layers=5, peg_cls_embedding=False,
                 alibi_slopes="paper", alibi_block_cls="time_heads",
                 use_feedforward_bias=True,
                 distillation_token=False, embedding_norm=True, final_norm=None, dtype=None,
                 **kwargs):
        pe = get_position_encoding(position_encoding)
        alibi_block_cls = check_cls_blocking(alibi_block_cls, "alibi_block_cls")
        final_norm = norm_first if final_norm is None else bool(final_norm)
        num_prefix_tokens = 2 if distillation_token else 1

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            hidden_dim, patch_size, patch_stride, dtype=dtype, name="patch_embedding"
        )
        grid_shape = self.patch_embedding.num_patches(num_frames, num_mel_bins)
        self.position_embedding = None
        if pe.absolute_table != "none":
            self.position_embedding = AbsolutePositionEmbedding(
                grid_shape, frequency_only=pe.absolute_table == "frequency", dtype=dtype,
                name="position_embedding",
            )
        self.flatten_grid = keras.layers.Reshape((-1, hidden_dim), dtype=dtype,
                                                 name="flatten_grid")
        self.class_token = ClassToken(dtype=dtype, name="class_token")
        self.distillation_token = None
        if distillation_token:
            self.distillation_token = ClassToken(dtype=dtype, name="distillation_token")
        self.embedding_norm = None
        if embedding_norm:
            self.embedding_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=dtype, name="embedding_norm"
            )

        position_bias = _position_bias_factory(pe, num_heads, grid_shape, alibi_slopes,
                                               alibi_block_cls, num_prefix_tokens)
        self.blocks = [
            TransformerEncoderBlock(
                num_heads, intermediate_dim, activation=activation, dropout=dropout,
                norm_first=norm_first, layer_norm_epsilon=layer_norm_epsilon,
                use_attention_bias=use_attention_bias,
                position_bias=position_bias(f"block_{i}_position_bias"),
                use_feedforward_bias=use_feedforward_bias, dtype=dtype, name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.pegs = []
        if pe.peg:
            self.pegs = [
                PositionEncodingGenerator(grid_shape[1], cls_embedding=peg_cls_embedding and
                                          i == 0, num_prefix_tokens=num_prefix_tokens,
                                          dtype=dtype, name=f"peg_{i}")
                for i in range(min(num_peg_layers, num_layers))
            ]
        self.final_norm = None
        if final_norm:
            self.final_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
            )

        # === Functional model ===
        features = keras.Input(shape=(None, num_mel_bins), name="features")
        x = self._encode(features, num_prefix_tokens, prefix_only=False)
        super().__init__(inputs=features, outputs=x, dtype=dtype, **kwargs)

        # === Config ===
        self.position_encoding = pe.name
        self.num_mel_bins, self.num_frames = num_mel_bins, num_frames
        self.patch_size = tuple(patch_size)
        self.patch_stride = tuple(patch_stride or patch_size)
        self.hidden_dim, self.num_layers, self.num_heads = hidden_dim, num_layers, num_heads
        self.intermediate_dim, self.activation = intermediate_dim, activation
        self.dropout, self.norm_first = dropout, norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_attention_bias = use_attention_bias
        self.use_feedforward_bias = use_feedforward_bias
        self.num_peg_layers, self.peg_cls_embedding = num_peg_layers, peg_cls_embedding
        self.alibi_slopes, self.alibi_block_cls = alibi_slopes, alibi_block_cls
        self.num_prefix_tokens, self.grid_shape = num_prefix_tokens, grid_shape

    def _encode(self, features, num_prefix_tokens, prefix_only):
        """The data path, features -> token states (see the class docstring)."""
        grid = self.patch_embedding(features)
        if self.position_embedding is not None:
            grid = self.position_embedding(grid)
        x = self.flatten_grid(grid)
        if self.distillation_token is not None:
            x = self.distillation_token(x)
        x = self.class_token(x)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        # The last block computes the prefix states alone, unless a PEG follows it.
        last_prefix_only = prefix_only and len(self.pegs) < len(self.blocks)
        for i, block in enumerate(self.blocks):
            if last_prefix_only and i == len(self.blocks) - 1:
                x = block(x, num_query_tokens=num_prefix_tokens)
            else:
                x = block(x)
            if i < len(self.pegs):
                x = self.pegs[i](x)
        if prefix_only and not last_prefix_only:
            x = x[:, :num_prefix_tokens]
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x

    def call(self, features, training=None, prefix_only=False):
        """Features -> the states of every token, or with `prefix_only=True` those of the
        prefix tokens alone `[batch, P, dim]`, which is all a classifier head reads: the
        last block then computes only their queries, attention rows and feed-forward
        (the same values, most of one block's work saved)."""
        if not prefix_only:
            return super().call(features, training=training)
        return self._encode(features, self.num_prefix_tokens, prefix_only=True)

    def compute_output_spec(self, features, training=None, prefix_only=False):
        spec = super().compute_output_spec(features)
        if not prefix_only:
            return spec
        return keras.KerasTensor((spec.shape[0], self.num_prefix_tokens, spec.shape[2]),
                                 dtype=spec.dtype)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "position_encoding": self.position_encoding,
            "num_mel_bins": self.num_mel_bins,
            "num_frames": self.num_frames,
            "patch_size": self.patch_size,
            "patch_stride": self.patch_stride,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_attention_bias": self.use_attention_bias,
            "num_peg_layers": self.num_peg_layers,
            "peg_cls_embedding": self.peg_cls_embedding,
            "alibi_slopes": self.alibi_slopes,
            "alibi_block_cls": self.alibi_block_cls,
            "use_feedforward_bias": self.use_feedforward_bias,
            "distillation_token": self.distillation_token is not None,
            "embedding_norm": self.embedding_norm is not None,
            "final_norm": self.final_norm is not None,
        }
