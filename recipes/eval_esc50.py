r"""ESC-50 5-fold cross-validation of an AudioSet-pretrained AST (or one from scratch).

    python recipes/eval_esc50.py --init=saved_models/audioset/time_alibi/model.keras \
        --data_dir=data/esc50                                   # the paper's protocol
    python recipes/eval_esc50.py            # demo data, fine-tunes the README's main-job model
    python recipes/eval_esc50.py --pe=time_alibi                # demo data, from scratch

For each official fold, the output layer is replaced (softmax over the ESC-50 classes),
trained alone (stage 1, paper: 10 epochs at 1e-3), then the whole model is fine-tuned
(stage 2, paper: 40 epochs from 1e-4, x0.85 per epoch), and the held-out fold is classified.
With `--data_dir` (TFRecords of `python -m tfrecords_tools.esc50`) the defaults are the
paper's; without it, synthetic demo data are generated under `demo_data/` and the defaults
are sized for a CPU. Prints the accuracy per fold, mean +- std and pooled over all test
clips; writes results.json and the confusion matrix (summed over folds) to `--output_dir`.
`--help` lists every flag (the fields of `keras_astpe.training.ESC50Config`).
"""

import keras_astpe_startup

keras_astpe_startup.configure()  # first: before Keras imports TensorFlow

from keras_astpe import cli
from keras_astpe.training import esc50
from tfrecords_tools.demo import with_demo_data


def main(config):
    config = with_demo_data(config, "esc50")
    print("\n" + esc50.summary(esc50.evaluate_esc50(config)))


if __name__ == "__main__":
    cli.run(main, esc50.ESC50Config)
