"""The paper's own trained models (dienen checkpoints) -> a keras-astpe model (.keras).

    python recipes/convert_astpe.py --checkpoint=abs-pe-encodings-220ksteps.weights \\
        --pe=absolute --output=absolute.keras
    python recipes/convert_astpe.py --checkpoint=ckpt-250000.weights,ckpt-260000.weights \\
        --config=audio_spectrogram_transformer_peg2.yaml --output=peg2-swa.keras
    python recipes/convert_astpe.py --checkpoint=peg-embeddings-220ksteps.dnn \\
        --output=peg.keras

`--checkpoint` takes the `.weights` checkpoints or `.dnn` models of the study's code
(habla-liaa/ast-pe on dienen); several, comma-separated, are averaged (SWA; dienen's own
`swa.weights` holds a sum: pass the checkpoints instead). The positional encoding, the
ALiBi slopes and [CLS] blocking are read from the weights; the front end, patches and
layout from the model's config (a `.dnn` holds it; for `.weights`, `--config` takes the
run's architecture YAML). Whatever the files and flags leave open is assumed as the paper
has it and listed after the output line. Short clips are zero-padded to the model's input
length, as the original evaluation did (`--min_samples=0` scores them at their own
length). See `keras_astpe.conversion.dienen`.
"""

import dataclasses

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.conversion import ConvertedModel
from keras_astpe.models.position_encodings import PE_KINDS


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    checkpoint: tuple[str, ...] = cli.setting(
        help="dienen .weights or .dnn file(s) of one model; several are averaged.",
        required=True)
    pe: str | None = cli.setting(
        None, choices=PE_KINDS,
        help="Positional encoding of the model (default: read from the weights; given, it "
        "is checked).")
    config: str | None = cli.setting(
        None, help="The run's architecture YAML (configs/model/architectures/*.yaml of the "
        "study), for .weights files: front end, patches, layout (a .dnn carries its own).")
    patches: str | None = cli.setting(
        None, choices=("32x8", "8x32"),
        help="Frames x mel bins of the run's patches (default: the config's GetPatches read "
        "as dienen does since 2021-09-07, else the paper's 32x8; dienen before cut 8x32).")
    num_heads: int | None = cli.setting(
        None, help="Attention heads, when neither the checkpoint nor the config tells "
        "(default: width / 64, the paper's 12).")
    min_samples: int | None = cli.setting(
        None, help="Zero-pad shorter clips to this many samples (default: the model's input, "
        "158,960 for the paper's; 0: score clips at their own length).")
    model: ConvertedModel

    def __post_init__(self):
        if self.min_samples is not None and self.min_samples < 0:
            raise ValueError(f"--min_samples={self.min_samples}: must be >= 0")


def main(config):
    from keras_astpe.conversion import default_class_names
    from keras_astpe.conversion.dienen import dienen_conversion

    conversion = dienen_conversion(
        config.checkpoint, config.pe, config=config.config, patches=config.patches,
        num_heads=config.num_heads, min_samples=config.min_samples,
        activation=config.model.head_activation)
    model = conversion.model
    names = config.model.names() or default_class_names(model.num_classes)
    if names is not None:
        if len(names) != model.num_classes:
            raise ValueError(f"--class_names={config.model.class_names}: {len(names)} names "
                             f"for {model.num_classes} outputs")
        model.class_names = tuple(names)
    path = config.model.write(model)
    backbone = model.backbone
    print(f"Wrote {path}: {backbone.position_encoding}, {len(config.checkpoint)} "
          f"checkpoint(s) averaged, {backbone.num_layers} blocks of {backbone.hidden_dim}, "
          f"{model.num_classes} classes; {conversion.summary}")
    for assumption in conversion.assumed:
        print(f"  assumed: {assumption}")


if __name__ == "__main__":
    cli.run(main, ConvertConfig)
