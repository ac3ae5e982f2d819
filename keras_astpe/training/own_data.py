"""Training on your own sounds: any converted dataset, as a configuration of the engine.

    config = OwnDataConfig.named(data_dir="data/my_sounds",
                                 init="saved_models/audioset-demo/time_alibi/model.keras")
    results = train_own_data(config)

The data are any dataset of `tfrecords_tools` (a folder per class, a CSV, Speech Commands,
...): single-label (softmax, cross-entropy, accuracy, per-class accuracy, confusion matrix)
or multi-label (sigmoid, binary cross-entropy, mAP, AUC, d') as its `dataset.json` says.
A new model (`pe`) trains on each clip's whole length; a `.keras` model of this project
(`init`: the demo's, a converted AST or paper model) is fine-tuned, with a new head when
the classes differ. The final model is the checkpoint with the best validation value
(`selection="best"`, the split of role `validation`), evaluated on the test split; see
`engine.train` for what a run writes and how it resumes.

Named configurations (`--config`):

- `default` (with `--data_dir`): batch 32, 5,000 steps (160,000 clips drawn: about 30
  epochs of 5,000 clips), a checkpoint and validation every 500 steps, warm-up 500 steps to
  2.5e-4, then decay to a tenth; a new model is `ast-pe-small`. Meant for a few hundred to
  a few hundred thousand clips: a small dataset is seen many times (the best validation
  checkpoint guards against overfitting), a large one less than once (raise
  `--train_steps`, and `--checkpoint_every` so that validating stays cheap).
- `demo` (without `--data_dir`): the class-folder demo of `tfrecords_tools.demo`
  (five classes of synthetic sounds), fine-tuning the quick start's model when it exists,
  else training `time_alibi` (`ast-pe-tiny`) from scratch: a CPU-sized run.
- `speech_commands`: AST's Speech Commands V2 recipe (`SPEECH_COMMANDS`).
"""

import dataclasses
import math
import os

from keras_astpe.cli import NamedConfigs, setting
from keras_astpe.data.dataset_info import DatasetInfo
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.presets import get_preset_entry
from keras_astpe.training import engine

QUICK_START_MODEL = os.path.join("saved_models", "audioset-demo", "time_alibi", "model.keras")

# AST's Speech Commands V2 (35 classes) recipe, egs/speechcommands/run_sc.sh of
# YuanGongND/ast: 128 frames (1 s clips zero-padded), 128 mel bins, 16x16 patches with
# stride 10, fbank statistics -6.845978 / 5.5654526, one frequency and one time mask of
# up to 48, mixup of 60% of the clips with Beta(10, 10), batch 128, Adam at 2.5e-4 for 30
# epochs, x0.85 per epoch from epoch 5, the best epoch on validation evaluated on test.
# Epochs become steps for the dataset's 84,843 training clips: 663 batches of 128.
SPEECH_COMMANDS_TRAIN_CLIPS = 84_843
_SC_EPOCH = math.ceil(SPEECH_COMMANDS_TRAIN_CLIPS / 128)
SPEECH_COMMANDS = {
    "preset": "ast", "frames": 128, "fbank_stats": (-6.845978, 5.5654526),
    "mask_probability": 1.0, "num_masks": (1, 1), "max_freq_mask": 48, "max_time_mask": 48,
    "batch_size": 128, "max_lr": 2.5e-4, "train_steps": 30 * _SC_EPOCH,
    "checkpoint_every": _SC_EPOCH,
    # AST holds 2.5e-4 for 5 epochs, then multiplies it by 0.85 after each of the other 25;
    # the engine's schedule warms up over those 5 epochs and decays continuously to the
    # same final rate.
    "warmup_steps": 5 * _SC_EPOCH, "decay_rate": 0.85 ** 25,
    # AST mixes 60% of the clips with a Beta(10, 10) weight; the engine mixes every clip
    # with a Beta(alpha, alpha) one: alpha = 1 gives the same mean share of the minor clip.
    "data": {"mixup": 1.0},
}


def _demo_init(settings):
    """The quick start's model when it exists and no --pe is given."""
    if settings.get("pe") is None and os.path.isfile(QUICK_START_MODEL):
        return QUICK_START_MODEL
    return None


def _demo_pe(settings):
    """time_alibi from scratch when there is no model to fine-tune."""
    if settings.get("init") is None and not os.path.isfile(QUICK_START_MODEL):
        return "time_alibi"
    return None


def _demo_output_dir(settings):
    name = settings.get("pe") or _demo_pe(settings)
    init = settings.get("init") or _demo_init(settings)
    if name is None and init is not None:
        name = os.path.basename(os.path.dirname(os.path.abspath(init)))
    return os.path.join("saved_models", "sounds-demo", name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OwnDataConfig(NamedConfigs, engine.TrainConfig):
    """Settings of a run on your own data; each field is a flag of `recipes/train.py`."""

    CONFIGS = {
        "default": {"batch_size": 32, "train_steps": 5000, "checkpoint_every": 500,
                    "warmup_steps": 500, "max_lr": 2.5e-4},
        "demo": {"preset": "ast-pe-tiny", "batch_size": 32, "train_steps": 300,
                 "checkpoint_every": 50, "warmup_steps": 50, "max_lr": 1e-3,
                 "init": _demo_init, "pe": _demo_pe, "output_dir": _demo_output_dir},
        "speech_commands": SPEECH_COMMANDS,
    }

    selection: str = setting(
        "best", choices=engine.SELECTIONS, help="The final model: 'best', the checkpoint "
        "with the best value on the validation split (accuracy single-label, Keras' PR-AUC "
        "estimate of mAP multi-label); 'swa', the average of the last --swa_last "
        "checkpoints.")

    @classmethod
    def choose(cls, given):
        """'default' with --data_dir (for a few hundred to a few hundred thousand clips:
        5,000 steps of 32, a validation every 500), 'demo' without (the generated
        class-folder demo); 'speech_commands' is AST's recipe for Speech Commands V2."""
        return "default" if given.get("data_dir") else "demo"


def clip_frames(preset, clip_seconds):
    """Frames of the front end of `preset` for a clip of `clip_seconds`."""
    entry = get_preset_entry(preset)
    framing = entry.log_mel_config if entry.front_end == "log_mel" else KaldiFbankConfig()
    return framing.num_frames(int(round(clip_seconds * framing.sample_rate)))


def with_clip_frames(config):
    """`config` with `frames` set to the frames of the dataset's clips for a new model that
    has none (a preset's frames are those of AudioSet's 10 s clips); as it is otherwise."""
    fine_tuning = config.init is not None and config.init.endswith(engine.KERAS_MODEL_SUFFIX)
    if config.frames is not None or fine_tuning:
        return config
    clip_seconds = DatasetInfo.load(config.data_dir).clip_seconds
    return dataclasses.replace(config, frames=clip_frames(config.preset, clip_seconds))


def train_own_data(config, verbose="auto", log=print):
    """Trains, selects, evaluates and writes the run folder of `config` (`engine.train`)."""
    return engine.train(with_clip_frames(config), verbose=verbose, log=log)


summary = engine.summary
