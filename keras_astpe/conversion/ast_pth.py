"""The original AST's PyTorch state dicts (YuanGongND/ast `.pth`) -> an `ASTClassifier`.

The released files (`audioset_10_10_0.4593.pth`, ...) are the `state_dict()` of AST's
`ASTModel` wrapped in `DataParallel`: `module.v.*` is the timm DeiT (`cls_token`,
`dist_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}`, `norm`, and DeiT's unused
ImageNet heads `head`, `head_dist`), `module.mlp_head.0` the head LayerNorm and
`module.mlp_head.1` the dense layer. Files saved without `DataParallel` (no `module.`) are
read too. LayerNorm epsilons are timm's 1e-6 in the encoder and PyTorch's 1e-5 in the head.

The strides and input length are not stored: the number of patch positions gives
`f_dim * t_dim`, and the released settings (strides 10, 12, 14 or 16, equal in frequency
and time; 1024, 512 or 128 frames) are each identified by it. Others need them given.
"""

from keras_astpe.conversion.ast_model import ASTGeometry, build_ast_classifier
from keras_astpe.conversion.state_dicts import read_state_dict
from keras_astpe.conversion.vit_weights import from_timm_names
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter

RELEASED_STRIDES = (10, 12, 14, 16)
RELEASED_FRAMES = (1024, 512, 128)
ENCODER_EPSILON = 1e-6  # timm 0.4.5's ViT LayerNorm
HEAD_EPSILON = 1e-5  # AST's mlp_head: nn.LayerNorm
HEAD_DIM = 64  # every ViT/DeiT AST starts from; the state dict does not say


def _prefix(state, source):
    for prefix in ("module.", ""):
        if prefix + "v.pos_embed" in state and prefix + "mlp_head.1.weight" in state:
            return prefix
    raise ValueError(f"{source}: not a state dict of the original AST (no module.v.pos_embed "
                     "and module.mlp_head.1.weight)")


def infer_geometry(num_patches, source, *, num_mel_bins=128, patch_size=16,
                   frequency_stride=None, time_stride=None, num_frames=None):
    """The one `ASTGeometry` among the given and released settings that makes
    `num_patches` patches; a clear error when none or several do."""
    strides = [(frequency_stride, time_stride)] if frequency_stride and time_stride else [
        (s if frequency_stride is None else frequency_stride,
         s if time_stride is None else time_stride) for s in RELEASED_STRIDES]
    frames = [num_frames] if num_frames else list(RELEASED_FRAMES)
    fits = {ASTGeometry(num_mel_bins, n, patch_size, fs, ts)
            for fs, ts in strides for n in frames}
    fits = [g for g in fits if g.grid_shape[0] * g.grid_shape[1] == num_patches]
    if len(fits) == 1:
        return fits[0]
    given = ", ".join(f"{name}={value}" for name, value in (
        ("frequency_stride", frequency_stride), ("time_stride", time_stride),
        ("num_frames", num_frames)) if value)
    what = (f"several settings fit: {'; '.join(sorted(g.describe() for g in fits))}" if fits
            else "no released setting fits" + (f" (with {given})" if given else ""))
    raise ValueError(f"{source}: {num_patches} patch positions and {what}. Give the "
                     "frequency and time strides and the number of frames the model was "
                     "trained with.")


def convert_ast_pth(path, *, class_names=None, num_mel_bins=128, frequency_stride=None,
                    time_stride=None, num_frames=None, mean=KaldiFbankConfig.mean,
                    std=KaldiFbankConfig.std, num_heads=None, activation="sigmoid"):
    """The `ASTClassifier` of an original AST state dict, with AST's front end.

    Args:
        path: the `.pth` file.
        class_names: names of the outputs, or None.
        num_mel_bins, frequency_stride, time_stride, num_frames: AST's `input_fdim`,
            `fstride`, `tstride`, `input_tdim`; strides and frames are recovered from the
            position table when they are one of the released settings.
        mean, std: the dataset statistics of its front end (AST's AudioSet ones by default;
            ESC-50 -6.6268077 / 5.358466, Speech Commands -6.845978 / 5.5654526).
        num_heads: attention heads; default: width / 64, as every DeiT.
        activation: `"sigmoid"`, `"softmax"` or None (logits).
    """
    state = read_state_dict(path)
    prefix = _prefix(state, path)
    hidden = state[prefix + "v.cls_token"].shape[-1]
    patch_size = state[prefix + "v.patch_embed.proj.weight"].shape[-1]
    num_patches = state[prefix + "v.pos_embed"].reshape(-1, hidden).shape[0] - 2
    geometry = infer_geometry(num_patches, path, num_mel_bins=num_mel_bins,
                              patch_size=patch_size, frequency_stride=frequency_stride,
                              time_stride=time_stride, num_frames=num_frames)
    weights = from_timm_names(state, path, prefix=prefix + "v.",
                              grid_shape=geometry.grid_shape)
    weights.head_norm = (state[prefix + "mlp_head.0.weight"], state[prefix + "mlp_head.0.bias"])
    weights.head = (state[prefix + "mlp_head.1.weight"], state[prefix + "mlp_head.1.bias"])
    front_end = KaldiFbankConfig(num_mel_bins=geometry.num_mel_bins,
                                 target_frames=geometry.num_frames, mean=mean, std=std)
    return build_ast_classifier(
        weights, geometry, num_heads=num_heads or hidden // HEAD_DIM,
        layer_norm_epsilon=ENCODER_EPSILON, head_norm_epsilon=HEAD_EPSILON,
        audio_converter=KaldiFbankAudioConverter(front_end), class_names=class_names,
        activation=activation)
