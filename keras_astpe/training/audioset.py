"""AudioSet training of the AST-PE study (SPEC section 5): a configuration of the engine.

    config = AudioSetConfig.named("paper", pe="time_alibi", data_dir="data/audioset")
    results = train_audioset(config)

Training set: the `balanced_train` and `unbalanced_train` records; evaluation: `eval`.
Adam with gradient clipping by value 1, binary cross-entropy, linear warm-up then decay,
a checkpoint every `checkpoint_every` steps, and the average of the last `swa_last`
checkpoints (SWA) as the final model, evaluated with mAP, AUC and d-prime next to the last
checkpoint (see `engine.train`).
"""

import dataclasses
import os

from keras_astpe.cli import NamedConfigs, setting
from keras_astpe.models import PE_KINDS
from keras_astpe.training import engine


def _output_dir(folder):
    return lambda settings: os.path.join("saved_models", folder, settings["pe"])


# The paper trained learned-relative attention with batch 32 for 470k steps (memory).
PAPER_BY_PE = {"learned_relative": {"batch_size": 32, "train_steps": 470_000}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AudioSetConfig(NamedConfigs, engine.TrainConfig):
    """Settings of an AudioSet training run; each field is a flag of
    `recipes/train_audioset.py`."""

    CONFIGS = {
        "paper": {"preset": "ast-pe", "batch_size": 64, "train_steps": 290_000,
                  "warmup_steps": 30_000, "max_lr": 5e-4, "checkpoint_every": 10_000,
                  "swa_last": 10, "output_dir": _output_dir("audioset")},
        # The demo: generation + conversion + training + evaluation of the synthetic demo
        # data in a few minutes on 2 CPU cores. SWA does not help a run this short, still
        # improving at a learning rate already decayed 10x (bench/README.md, "SWA on the
        # demo"): the demo averages its last 3 checkpoints, 50 steps apart.
        "demo": {"preset": "ast-pe-tiny", "batch_size": 32, "train_steps": 800,
                 "warmup_steps": 100, "max_lr": 2e-3, "checkpoint_every": 50, "swa_last": 3,
                 "output_dir": _output_dir("audioset-demo")},
    }

    pe: str | None = setting(None, choices=PE_KINDS, help="Positional encoding.",
                             required=True)
    train_splits: tuple[str, ...] | None = setting(
        ("balanced_train", "unbalanced_train"),
        help="Splits of --data_dir whose records form the training set.")
    eval_split: str | None = setting("eval", help="Split the model is evaluated on.")

    @classmethod
    def choose(cls, given):
        """'paper' with --data_dir (learned_relative: batch 32 and 470k steps, as in the
        paper), 'demo' without."""
        return "paper" if given.get("data_dir") else "demo"

    @classmethod
    def named(cls, name=None, **given):
        name = name or cls.choose(given)
        if name == "paper":
            given = {**PAPER_BY_PE.get(given.get("pe"), {}), **given}
        return super().named(name, **given)

    def __post_init__(self):
        if self.pe is None:
            raise ValueError("--pe is required: the positional encoding of the new model")
        super().__post_init__()


def train_audioset(config, verbose="auto", log=print):
    """Trains, averages, evaluates and writes the run folder of `config` (`engine.train`)."""
    return engine.train(config, verbose=verbose, log=log)


summary = engine.summary
