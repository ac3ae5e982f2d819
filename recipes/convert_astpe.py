"""The paper's own trained models (dienen checkpoints) -> a keras-astpe model (.keras).

    python recipes/convert_astpe.py --checkpoint=abs-pe-encodings-220ksteps.weights \\
        --pe=absolute --output=absolute.keras
    python recipes/convert_astpe.py --checkpoint=ckpt-250000.weights,ckpt-260000.weights \\
        --pe=alibi_2d --output=alibi_2d-swa.keras

`--checkpoint` takes the `.weights` checkpoints or `.dnn` models of the study's code
(habla-liaa/ast-pe on dienen); several, comma-separated, are averaged (SWA; dienen's own
`swa.weights` holds a sum: pass the checkpoints instead). The model carries the paper's
front end with the original scaling (log-mel -5.61 -> 0, 2.07 -> 1) and reproduces the
original's scores; see `keras_astpe.conversion.dienen`.
"""

import dataclasses

from keras_astpe import cli
from keras_astpe.conversion import ConvertedModel
from keras_astpe.models.position_encodings import PE_KINDS


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    checkpoint: tuple[str, ...] = cli.setting(
        help="dienen .weights or .dnn file(s) of one model; several are averaged.",
        required=True)
    pe: str = cli.setting(choices=PE_KINDS, help="Positional encoding of the model.",
                          required=True)
    num_heads: int | None = cli.setting(
        None, help="Attention heads, when the checkpoint does not tell (default: width / "
        "64, the paper's 12).")
    model: ConvertedModel


def main(config):
    from keras_astpe.conversion import convert_dienen, default_class_names

    model = convert_dienen(config.checkpoint, config.pe, num_heads=config.num_heads,
                           activation=config.model.head_activation)
    names = config.model.names() or default_class_names(model.num_classes)
    if names is not None:
        if len(names) != model.num_classes:
            raise ValueError(f"--class_names={config.model.class_names}: {len(names)} names "
                             f"for {model.num_classes} outputs")
        model.class_names = tuple(names)
    path = config.model.write(model)
    backbone = model.backbone
    print(f"Wrote {path}: {config.pe}, {len(config.checkpoint)} checkpoint(s) averaged, "
          f"{backbone.num_layers} blocks of {backbone.hidden_dim}, {model.num_classes} classes")


if __name__ == "__main__":
    cli.run(main, ConvertConfig)
