"""ESC-50 5-fold cross-validation of an AudioSet-pretrained AST (or one from scratch).

    python recipes/eval_esc50.py --init=saved_models/audioset/time_alibi/model.keras \
        --data_dir=data/esc50                                   # the paper's protocol
    python recipes/eval_esc50.py            # demo data, fine-tunes the README's main-job model
    python recipes/eval_esc50.py --pe=time_alibi                # demo data, from scratch

For each official fold, the output layer is replaced (softmax over the ESC-50 classes),
trained alone (stage 1, paper: 10 epochs at 1e-3), then the whole model is fine-tuned
(stage 2, paper: 40 epochs from 1e-4, x0.85 per epoch), and the held-out fold is classified.
With `--data_dir` (TFRecords of `python -m tfrecords_tools.esc50`) the defaults are the
paper's; without it, synthetic demo data are generated under `demo_data/` and the defaults
are sized for a CPU. Prints the accuracy per fold and mean +- std; writes results.json and
the confusion matrix (summed over folds) to `--output_dir`.
"""

import os
import sys

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_astpe  # noqa: E402
from keras_astpe.training import esc50  # noqa: E402

_P, _D = esc50.PAPER_DEFAULTS, esc50.DEMO_DEFAULTS


def _default(name):
    return f"(default: {_P[name]} with --data_dir, {_D[name]} for the demo)"


flags.DEFINE_string("init", None,
                    "AudioSet model to fine-tune: the model.keras of recipes/train_audioset.py "
                    "(its normalization_stats.json must be next to it). Either --init or "
                    "--pe; for the demo (no --data_dir) with neither, the model of "
                    "`python recipes/train_audioset.py --pe=time_alibi`: "
                    f"{esc50.DEMO_INIT}.")
flags.DEFINE_enum("pe", None, keras_astpe.PE_KINDS,
                  "Positional encoding of a model trained from scratch (without --init).")
flags.DEFINE_enum("preset", None, sorted(keras_astpe.PRESETS),
                  f"Model size from scratch {_default('preset')}.")
flags.DEFINE_string("data_dir", None,
                    "Folder of ESC-50 TFRecords written by tfrecords_tools.esc50 "
                    "(esc50-*-of-*.tfrecord and classes.csv). Without it, the demo data are "
                    "generated under demo_data/ on first use.")
flags.DEFINE_list("folds", None, "Held-out folds to evaluate (default: every fold in the data).")
flags.DEFINE_integer("batch_size", None, f"Batch size {_default('batch_size')}.")
flags.DEFINE_integer("head_epochs", None,
                     f"Stage 1 epochs, output layer only {_default('head_epochs')}; 0 when "
                     "training from scratch.")
flags.DEFINE_float("head_lr", None, f"Stage 1 learning rate {_default('head_lr')}.")
flags.DEFINE_integer("finetune_epochs", None,
                     f"Stage 2 epochs, whole model {_default('finetune_epochs')}.")
flags.DEFINE_float("finetune_lr", None,
                   f"Stage 2 initial learning rate {_default('finetune_lr')}.")
flags.DEFINE_float("lr_decay", None,
                   f"Stage 2 learning-rate factor per epoch {_default('lr_decay')}.")
flags.DEFINE_string("output_dir", None,
                    "Results folder (default: saved_models/esc50/<name>, or "
                    "saved_models/esc50-demo/<name>; <name> is the folder of --init, or "
                    "<pe>-scratch).")
flags.DEFINE_integer("seed", 0, "Seed of the new layers, data order, augmentation, dropout.")
flags.DEFINE_enum("demo_size", "small", ["small", "tiny"],
                  "Size of the generated demo data (tiny: a few clips, for smoke tests).")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = esc50.ESC50Config.create(
            init=FLAGS.init, pe=FLAGS.pe, data_dir=FLAGS.data_dir, preset=FLAGS.preset,
            batch_size=FLAGS.batch_size, head_epochs=FLAGS.head_epochs,
            head_lr=FLAGS.head_lr, finetune_epochs=FLAGS.finetune_epochs,
            finetune_lr=FLAGS.finetune_lr, lr_decay=FLAGS.lr_decay,
            folds=None if FLAGS.folds is None else tuple(int(f) for f in FLAGS.folds),
            output_dir=FLAGS.output_dir, seed=FLAGS.seed, demo_size=FLAGS.demo_size)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    try:
        results = esc50.evaluate_esc50(config)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    out = results["output_dir"]
    folds = ", ".join(f"fold {fold}: {100 * accuracy:.1f}%"
                      for fold, accuracy in results["accuracy_per_fold"].items())
    print(f"\nESC-50 ({results['position_encoding']}): accuracy "
          f"{100 * results['accuracy_mean']:.1f} +- {100 * results['accuracy_std']:.1f}% "
          f"(chance {100 * results['chance_accuracy']:.1f}%)\n{folds}\n"
          f"Results: {os.path.join(out, 'results.json')}\n"
          f"Confusion matrix: {os.path.join(out, 'confusion_matrix.png')}")


if __name__ == "__main__":
    app.run(main)
