"""Figure 3 of the AST-PE paper for a saved model: cosine similarity of its position tables.

    python recipes/plot_pe.py --model=saved_models/absolute/model.keras --output_dir=figures
    python recipes/plot_pe.py --model=lr.keras --output_dir=figures --block=0

Absolute embeddings (`absolute`, `conditional_absolute`) give the similarity between time
chunks and between frequency bands (Figure 3a/3b); `time_alibi` only learns frequency
embeddings; `learned_relative` gives the similarity of the rows of `E^t` and `E^f` of each
block, or of `--block` (Figure 3c/3d). `none`, `alibi_2d` and `conditional` have no learned
position table: the recipe exits with an error. Prints the paths of the PNGs it wrote.
See `keras_astpe.analysis`.
"""

import os
import sys

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "Saved model (`.keras`) to analyse.",
                             required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the PNGs (created).",
                                  required=True)
_BLOCK = flags.DEFINE_integer(
    "block", None, "learned_relative only: the encoder block to plot (0-based; negative "
    "counts from the last). Default: every block, plus an overview of all blocks.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not os.path.isfile(_MODEL.value):
        sys.exit(f"error: model file not found: {_MODEL.value}")
    import keras

    import keras_astpe  # noqa: F401 (registers the model classes for loading)
    from keras_astpe import analysis

    model = keras.saving.load_model(_MODEL.value, compile=False)
    try:
        paths = analysis.plot_position_similarities(
            model, _OUTPUT_DIR.value, block=_BLOCK.value,
            model_name=os.path.basename(_MODEL.value))
    except (TypeError, ValueError) as error:
        sys.exit(f"error: {error}")
    for path in paths:
        print(path)


if __name__ == "__main__":
    app.run(main)
