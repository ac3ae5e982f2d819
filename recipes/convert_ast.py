"""An original AST checkpoint -> a keras-astpe model (.keras) that loads on every backend.

    python recipes/convert_ast.py --checkpoint=ast-finetuned-audioset-10-10-0.4593 \\
        --output=ast.keras
    python recipes/convert_ast.py --checkpoint=audioset_10_10_0.4593.pth --output=ast.keras

`--checkpoint` is a transformers `ASTForAudioClassification` folder (`config.json` and
`model.safetensors` or `pytorch_model.bin`, as on the Hugging Face Hub) or a state dict of
the original repository (YuanGongND/ast, `module.v.*` keys). The model carries AST's front
end (kaldi fbank, length, statistics) and its class names: score raw audio with
`keras_astpe.tag(keras.saving.load_model(path), "clip.wav")` or `recipes/predict.py`.
See `keras_astpe.conversion`.
"""

import dataclasses

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.conversion import ConvertedModel

PTH_ONLY = ".pth only; a transformers folder states it in its config."


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    checkpoint: str = cli.setting(help="transformers AST folder, or original AST .pth file.",
                                  required=True)
    frequency_stride: int | None = cli.setting(
        None, help=f"AST's fstride, when not one of the released settings ({PTH_ONLY})")
    time_stride: int | None = cli.setting(None, help=f"AST's tstride ({PTH_ONLY})")
    num_frames: int | None = cli.setting(None, help=f"AST's input_tdim ({PTH_ONLY})")
    mean: float | None = cli.setting(
        None, help=f"Front-end mean, default AudioSet's -4.2677393 ({PTH_ONLY})")
    std: float | None = cli.setting(
        None, help=f"Front-end std, default AudioSet's 4.5689974 ({PTH_ONLY})")
    model: ConvertedModel


def main(config):
    from keras_astpe.conversion import convert_ast_checkpoint

    model = convert_ast_checkpoint(
        config.checkpoint, activation=config.model.head_activation,
        class_names=config.model.names(), frequency_stride=config.frequency_stride,
        time_stride=config.time_stride, num_frames=config.num_frames, mean=config.mean,
        std=config.std)
    path = config.model.write(model)
    backbone, front_end = model.backbone, model.audio_converter.config
    print(f"Wrote {path}: AST, {backbone.num_layers} blocks of {backbone.hidden_dim}, "
          f"{backbone.grid_shape[0]} time x {backbone.grid_shape[1]} frequency patches, "
          f"{model.num_classes} classes; front end {front_end.num_mel_bins} kaldi fbank bins x "
          f"{front_end.target_frames} frames, mean {front_end.mean:g}, std {front_end.std:g}")


if __name__ == "__main__":
    cli.run(main, ConvertConfig)
