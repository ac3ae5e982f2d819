"""Pretrained weights in: the original AST and its ImageNet start, and the paper's models.

- `convert_ast_checkpoint`: an AST checkpoint of transformers (a folder) or of the original
  repository (a `.pth` file) -> an `ASTClassifier` of the `ast` preset with AST's front end.
- `init_from_vit`: an ImageNet ViT/DeiT (timm state dict or keras-hub preset) -> the
  initial weights of an AST model, as AST does.
- `convert_dienen`: the paper's own checkpoints (dienen `.weights` / `.dnn`, several
  averaged) -> an `ASTClassifier` with the paper's front end.
"""

import dataclasses
import os

from keras_astpe.cli import setting
from keras_astpe.conversion.ast_pth import convert_ast_pth
from keras_astpe.conversion.dienen import convert_dienen
from keras_astpe.conversion.transformers_ast import convert_transformers_ast
from keras_astpe.conversion.vit_init import ViTInitReport, init_from_vit

AUDIOSET_CLASSES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data",
                                "audioset_class_labels_indices.csv")
NUM_AUDIOSET_CLASSES = 527


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertedModel:
    """The converter recipes' flags for the model they write: file, class names, head."""

    output: str = setting(help="The .keras file to write.", required=True)
    class_names: str | None = setting(
        None, help="CSV of class names (header row, name in the last column, one row per "
        "output). Default: the checkpoint's (transformers' id2label), else AudioSet's for a "
        "head of 527 outputs.")
    activation: str = setting("sigmoid", choices=("sigmoid", "softmax", "none"),
                              help="Output activation (the original models: sigmoid).")

    def __post_init__(self):
        if not self.output.endswith(".keras"):
            raise ValueError(f"--output={self.output}: the file name must end in .keras")
        if self.class_names is not None and not os.path.isfile(self.class_names):
            raise FileNotFoundError(f"--class_names={self.class_names}: file not found")

    @property
    def head_activation(self):
        return None if self.activation == "none" else self.activation

    def names(self):
        """The class names of `--class_names`, or None."""
        from keras_astpe.data.dataset_info import read_class_names

        return read_class_names(self.class_names) if self.class_names else None

    def write(self, model):
        """Saves `model` to `--output`, atomically (folders created)."""
        from keras_astpe.io_utils import atomic_path

        with atomic_path(self.output) as tmp:
            model.save(tmp)
        return self.output


def default_class_names(num_classes):
    """AudioSet's 527 names for a head of 527 outputs, else None."""
    from keras_astpe.data.dataset_info import read_class_names

    if num_classes == NUM_AUDIOSET_CLASSES:
        return read_class_names(AUDIOSET_CLASSES)
    return None


def convert_ast_checkpoint(path, *, class_names=None, activation="sigmoid", **pth_options):
    """The `ASTClassifier` of a transformers AST folder or an original AST `.pth` file.

    `class_names` replace the checkpoint's (transformers' `id2label`); a `.pth` without
    them gets AudioSet's when its head has 527 outputs. `pth_options` (`frequency_stride`,
    `time_stride`, `num_frames`, `mean`, `std`, `num_heads`: see `convert_ast_pth`) apply
    to `.pth` files only; those left None take their defaults.
    """
    path = os.fspath(path)
    given = {key: value for key, value in pth_options.items() if value is not None}
    if os.path.isdir(path):
        if given:
            raise ValueError(f"{path}: {sorted(given)} apply to .pth files; a transformers "
                             "folder states them in its config")
        model = convert_transformers_ast(path, activation=activation)
        if class_names is not None:
            model = _renamed(model, class_names, path)
        return model
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint (a transformers folder or a "
                                ".pth file)")
    model = convert_ast_pth(path, activation=activation, **given)
    names = class_names if class_names is not None else default_class_names(model.num_classes)
    return _renamed(model, names, path) if names is not None else model


def _renamed(model, class_names, source):
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for the {model.num_classes} "
                         f"outputs of {source}")
    model.class_names = tuple(map(str, class_names))
    return model


__all__ = ["ConvertedModel", "ViTInitReport", "convert_ast_checkpoint", "convert_ast_pth",
           "convert_dienen", "convert_transformers_ast", "default_class_names", "init_from_vit"]
