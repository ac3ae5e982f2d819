"""Trains an AST with one of the seven positional encodings on AudioSet (the paper's recipe).

    python recipes/train_audioset.py --pe=time_alibi                      # demo data
    python recipes/train_audioset.py --pe=conditional --data_dir=data/audioset

With `--data_dir` (TFRecords of `python -m tfrecords_tools.audioset`), the settings are the
named configuration `paper`: preset `ast-pe`, batch 64, 290k steps, warm-up 30k to 5e-4, a
checkpoint every 10k steps, SWA of the last 10 (learned_relative: batch 32, 470k steps).
Without it, synthetic demo data are generated under `demo_data/` and the configuration
`demo` trains a small model in a few minutes on a CPU. `--config=paper|demo` chooses one
explicitly; every flag given overrides its value. Rerun the same command after an
interruption to resume from the last checkpoint.
Outputs (model.keras, metrics.json, plots, logs) go to `--output_dir`. `--help` lists every
flag (they are the fields of `keras_astpe.training.AudioSetConfig`).

On several GPUs, `--distribute=mirrored` (TensorFlow, one host), `multi_worker` (TensorFlow,
hosts of TF_CONFIG) or `data_parallel` (JAX), with the same global `--batch_size`; each
worker of a multi-host run runs this same command (see keras_astpe/training/distribution.py).
"""

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.training import audioset, distribution
from tfrecords_tools.demo import with_demo_data


def main(config):
    distribution.start(config.distribute)  # before anything runs on TensorFlow or JAX
    config = with_demo_data(config, "audioset")
    print("\n" + audioset.summary(audioset.train_audioset(config)))


if __name__ == "__main__":
    cli.run(main, audioset.AudioSetConfig)
