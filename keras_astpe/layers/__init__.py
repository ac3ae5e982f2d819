"""Keras layers of the Audio Spectrogram Transformer and its positional encodings."""

from keras_astpe.layers.alibi import ALiBiBias, alibi_slopes
from keras_astpe.layers.attention import MultiHeadSelfAttention
from keras_astpe.layers.class_token import ClassToken
from keras_astpe.layers.encoder_block import TransformerEncoderBlock
from keras_astpe.layers.patch_embedding import PatchEmbedding
from keras_astpe.layers.peg import PositionEncodingGenerator
from keras_astpe.layers.position_embedding import AbsolutePositionEmbedding
from keras_astpe.layers.relative_attention import LearnedRelativeBias

__all__ = [
    "ALiBiBias",
    "AbsolutePositionEmbedding",
    "ClassToken",
    "LearnedRelativeBias",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PositionEncodingGenerator",
    "TransformerEncoderBlock",
    "alibi_slopes",
]
