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

import dataclasses
import os

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlotConfig:
    model: str = cli.setting(help="Saved model (.keras) to analyse.", required=True)
    output_dir: str = cli.setting(help="Folder for the PNGs (created).", required=True)
    block: int | None = cli.setting(
        None, help="learned_relative only: the encoder block to plot (0-based; negative "
        "counts from the last). Default: every block, plus an overview of all blocks.")

    def __post_init__(self):
        if not os.path.isfile(self.model):
            raise FileNotFoundError(f"--model={self.model}: model file not found")


def main(config):
    import keras

    from keras_astpe import analysis  # importing keras_astpe registers its model classes

    model = keras.saving.load_model(config.model, compile=False)
    for path in analysis.plot_position_similarities(
            model, config.output_dir, block=config.block,
            model_name=os.path.basename(config.model)):
        print(path)


if __name__ == "__main__":
    cli.run(main, PlotConfig)
