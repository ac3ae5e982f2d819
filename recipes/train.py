"""Trains an AST on your own converted sounds: from scratch, or fine-tuning a `.keras` model.

    python recipes/train.py                                          # the class-folder demo
    python recipes/train.py --data_dir=data/my_sounds --init=my_model.keras   # fine-tune
    python recipes/train.py --data_dir=data/my_sounds --pe=conditional       # from scratch
    python recipes/train.py --config=speech_commands --data_dir=data/sc --init=ast.keras

`--data_dir`: the output of `python -m tfrecords_tools.folder` or `tfrecords_tools.csv`
(single- or multi-label, as its dataset.json says). `--init` fine-tunes any model this
project writes or converts (its head is replaced when the classes differ); `--pe` trains a
new one. The final model is the checkpoint with the best validation value, evaluated on
the test split; it carries its front end and class names (`keras_astpe.tag`,
`recipes/predict.py`). Without `--data_dir`, a small class-folder demo is generated under
`demo_data/` and the quick start's model fine-tuned on it. `--config=default|demo|
speech_commands` chooses a named configuration; every flag given overrides its value.
Rerun the same command after an interruption to resume. `--help` lists every flag (the
fields of `keras_astpe.training.own_data.OwnDataConfig`); docs/training_your_own.md.
"""

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.training import distribution, own_data
from tfrecords_tools.demo import with_demo_data


def main(config):
    distribution.start(config.distribute)  # before anything runs on TensorFlow or JAX
    config = with_demo_data(config, "sounds")
    print("\n" + own_data.summary(own_data.train_own_data(config)))


if __name__ == "__main__":
    cli.run(main, own_data.OwnDataConfig)
