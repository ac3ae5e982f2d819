r"""Hyperparameter search over the positional encoding, learning rate, depth and dropout.

    python recipes/tune.py                                   # demo data, made on the fly
    python recipes/tune.py --data_dir=data/audioset --preset=ast-pe-small \
        --tuner=hyperband --epochs=9 --steps_per_epoch=500
    python recipes/tune.py --data_dir=data/esc50 --eval_fold=1

Trains short trials of AST classifiers with keras-tuner (`--tuner=bayesian` or
`hyperband`) on TFRecords written by `tfrecords_tools`, each trial a run of the training
engine, maximising the trial's mAP (multi-label data) or accuracy (single-label) on the
validation data (see `keras_astpe.training.tuning`). The dataset's manifest says which
splits train and validate and whether it is multi-label. Without `--data_dir`,
the synthetic demo data are generated and converted under `demo_data/` (once; shared with
the other recipes) and their AudioSet part is used.

Writes to `--output_dir`: `trials.json` (every trial: status, score, hyperparameters,
run folder, error), `best_hyperparameters.json` (only when every trial completed), the
keras-tuner state and each trial's run folder (its model, metrics, logs) in `search/` (a
re-run resumes it unless `--overwrite`), and prints the trial table.
Exits non-zero with the first failed trial's error when any trial failed.
"""

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from tfrecords_tools.demo import DEMO_DIR, prepare_demo_data

try:
    from keras_astpe.training import tuning
except ModuleNotFoundError as error:
    if error.name != "keras_tuner":
        raise
    raise SystemExit('error: recipes/tune.py needs keras-tuner: pip install -e ".[tune]"') from None


def main(config):
    data_dir = config.data_dir
    if data_dir is None:
        print(f"No --data_dir: using the {config.demo_size} demo data of {DEMO_DIR}/",
              flush=True)
        data_dir = prepare_demo_data("audioset", size=config.demo_size, progress=False)
    tuning.tune(config, data_dir)


if __name__ == "__main__":
    cli.run(main, tuning.TuneConfig)
