"""Trains an AST with one of the seven positional encodings on AudioSet (the paper's recipe).

    python recipes/train_audioset.py --pe=time_alibi                      # demo data
    python recipes/train_audioset.py --pe=conditional --data_dir=data/audioset

With `--data_dir` (TFRecords of `python -m tfrecords_tools.audioset`), the defaults are the
paper's: preset `ast-pe`, batch 64, 290k steps, warm-up 30k to 5e-4, a checkpoint every 10k
steps, SWA of the last 10 (learned_relative: batch 32, 470k steps). Without it, synthetic
demo data are generated under `demo_data/` and a small model trains in a few minutes on a
CPU. Rerun the same command after an interruption to resume from the last checkpoint.
Outputs (model.keras, metrics.json, plots, logs) go to `--output_dir`.
"""

import os
import sys

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_astpe  # noqa: E402
from keras_astpe.training import audioset, experiment  # noqa: E402

_P, _D = audioset.PAPER_DEFAULTS, audioset.DEMO_DEFAULTS


def _default(name):
    return f"(default: {_P[name]} with --data_dir, {_D[name]} for the demo)"


flags.DEFINE_enum("pe", None, keras_astpe.PE_KINDS, "Positional encoding.", required=True)
flags.DEFINE_enum("preset", None, sorted(keras_astpe.PRESETS),
                  f"Model size {_default('preset')}.")
flags.DEFINE_string("data_dir", None,
                    "Folder of AudioSet TFRecords written by tfrecords_tools.audioset "
                    "(<split>-*-of-*.tfrecord and class_labels_indices.csv). Without it, the "
                    "demo data are generated under demo_data/ on first use.")
flags.DEFINE_list("train_splits", list(audioset.TRAIN_SPLITS),
                  "Splits of --data_dir whose records form the training set (evaluation "
                  "always uses 'eval').")
flags.DEFINE_integer("batch_size", None, f"Batch size {_default('batch_size')}; "
                     "learned_relative uses 32 with --data_dir, as in the paper.")
flags.DEFINE_integer("train_steps", None, f"Optimizer steps {_default('train_steps')}; "
                     "learned_relative uses 470000 with --data_dir, as in the paper.")
flags.DEFINE_integer("warmup_steps", None,
                     f"Steps of linear learning-rate warm-up {_default('warmup_steps')}.")
flags.DEFINE_float("max_lr", None, f"Peak learning rate {_default('max_lr')}.")
flags.DEFINE_enum("schedule", "exponential", audioset.SCHEDULES,
                  "Decay after warm-up: 'exponential' (the paper's text) or 'inverse_sqrt' "
                  "(the original code: lr proportional to 1/sqrt(step)).")
flags.DEFINE_float("decay_rate", 0.1,
                   "Exponential schedule: factor the learning rate is multiplied by from the "
                   "end of warm-up to the last step (the paper does not give it).")
flags.DEFINE_integer("checkpoint_every", None,
                     f"Steps between checkpoints {_default('checkpoint_every')}; must divide "
                     "--train_steps. Also the length of a Keras 'epoch' in the logs.")
flags.DEFINE_integer("swa_last", None, "Number of last checkpoints averaged into the final "
                     f"model (SWA) {_default('swa_last')}.")
flags.DEFINE_string("output_dir", None,
                    "Run folder (default: saved_models/audioset/<pe>, or "
                    "saved_models/audioset-demo/<pe> for the demo). Rerunning with the same "
                    "folder resumes the run.")
flags.DEFINE_bool("mixed_precision", False, "Train with the mixed_bfloat16 dtype policy.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order, augmentation, dropout.")
flags.DEFINE_integer("stats_max_clips", 20000,
                     "Training clips used to compute the normalization statistics (0: all), "
                     "unless --data_dir holds normalization_stats.json.")
flags.DEFINE_enum("demo_size", "small", ["small", "tiny"],
                  "Size of the generated demo data (tiny: a few clips, for smoke tests).")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = audioset.AudioSetConfig.create(
            FLAGS.pe, data_dir=FLAGS.data_dir, preset=FLAGS.preset, batch_size=FLAGS.batch_size,
            train_steps=FLAGS.train_steps, warmup_steps=FLAGS.warmup_steps, max_lr=FLAGS.max_lr,
            schedule=FLAGS.schedule, decay_rate=FLAGS.decay_rate,
            checkpoint_every=FLAGS.checkpoint_every, swa_last=FLAGS.swa_last,
            train_splits=tuple(FLAGS.train_splits), output_dir=FLAGS.output_dir,
            mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed,
            stats_max_clips=FLAGS.stats_max_clips or None, demo_size=FLAGS.demo_size)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        results = audioset.train_audioset(config)
    except (FileNotFoundError, experiment.RunMismatchError) as error:
        sys.exit(f"error: {error}")
    out = results["output_dir"]
    print(f"\n{config.pe}: eval mAP {results['mAP']:.3f} (chance {results['chance_mAP']:.3f}), "
          f"AUC {results['AUC']:.3f}, d' {results['d_prime']:.3f} on "
          f"{results['num_eval_clips']} clips; SWA of steps {results['swa_steps']}.\n"
          f"Model: {os.path.join(out, 'model.keras')}\n"
          f"Metrics: {os.path.join(out, 'metrics.json')}, per-class AP: "
          f"{os.path.join(out, 'per_class_ap.csv')}\n"
          f"Plots: {os.path.join(out, 'learning_curves.png')}, "
          f"{os.path.join(out, 'per_class_ap.png')}\n"
          f"TensorBoard: tensorboard --logdir={os.path.join(out, 'tensorboard')}")


if __name__ == "__main__":
    app.run(main)
