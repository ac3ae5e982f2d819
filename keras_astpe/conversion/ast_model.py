"""An `ASTClassifier` of the `ast` preset holding the weights of an original AST."""

import dataclasses

from keras_astpe.conversion.vit_weights import assign_encoder, assign_head
from keras_astpe.models.backbone import ASTBackbone
from keras_astpe.models.classifier import ASTClassifier
from keras_astpe.models.presets import get_head, get_preset


@dataclasses.dataclass(frozen=True)
class ASTGeometry:
    """AST's input and patch grid: `num_mel_bins` x `num_frames` features, square patches
    of `patch_size` every `frequency_stride` bins and `time_stride` frames."""

    num_mel_bins: int = 128
    num_frames: int = 1024
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10

    @property
    def grid_shape(self):
        """`(frequency, time)` patches: 12 x 101 for AudioSet."""
        return ((self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
                (self.num_frames - self.patch_size) // self.time_stride + 1)

    def describe(self):
        return (f"{self.num_mel_bins} mel bins x {self.num_frames} frames, {self.patch_size}x"
                f"{self.patch_size} patches, frequency stride {self.frequency_stride}, time "
                f"stride {self.time_stride} ({self.grid_shape[0]} x {self.grid_shape[1]} "
                "patches)")


def build_ast_classifier(weights, geometry, *, num_heads, layer_norm_epsilon,
                         head_norm_epsilon, audio_converter=None, class_names=None,
                         activation="sigmoid"):
    """The `ast`-preset classifier of `geometry` holding `weights` (`ViTWeights` of an AST,
    with its head). Its outputs equal the original's logits (`activation=None`), or their
    sigmoid or softmax."""
    if weights.grid_positions.shape[:2] != geometry.grid_shape:
        raise ValueError(
            f"{weights.source}: {weights.grid_positions.shape[0]} x "
            f"{weights.grid_positions.shape[1]} patch positions, but {geometry.describe()}")
    if weights.patch_size != (geometry.patch_size,) * 2 or weights.patch_kernel.shape[1] != 1:
        raise ValueError(f"{weights.source}: patch projection {weights.patch_kernel.shape}, "
                         f"expected [dim, 1, {geometry.patch_size}, {geometry.patch_size}]")
    if weights.hidden_dim % num_heads:
        raise ValueError(f"{weights.source}: width {weights.hidden_dim} is not divisible by "
                         f"{num_heads} heads")
    config = dict(
        get_preset("ast"),
        num_mel_bins=geometry.num_mel_bins, num_frames=geometry.num_frames,
        patch_size=(geometry.patch_size, geometry.patch_size),
        patch_stride=(geometry.time_stride, geometry.frequency_stride),
        hidden_dim=weights.hidden_dim, num_layers=len(weights.blocks), num_heads=num_heads,
        intermediate_dim=weights.intermediate_dim, layer_norm_epsilon=layer_norm_epsilon,
    )
    backbone = ASTBackbone(position_encoding="absolute", **config)
    head = dict(get_head("ast"), head_norm_epsilon=head_norm_epsilon)
    model = ASTClassifier(backbone, weights.head[0].shape[0], activation=activation,
                          audio_converter=audio_converter, class_names=class_names, **head)
    assign_encoder(backbone, weights)
    assign_head(model, weights)
    return model
