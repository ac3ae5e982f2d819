"""Flags generated from config dataclasses, and one-line errors."""

import dataclasses
import errno

import pytest
from absl import flags

from keras_astpe import cli

pytestmark = pytest.mark.backend_agnostic


@dataclasses.dataclass(frozen=True)
class _Nested:
    skip: bool = cli.setting(False, help="Skip.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Config:
    kind: str = cli.setting(help="Kind.", choices=("a", "b"), required=True)
    steps: int | None = cli.setting(None, help="Steps.")
    rate: float = cli.setting(0.5, help="Rate.")
    folds: tuple[int, ...] | None = cli.setting(None, help="Folds.")
    names: tuple[str, ...] = cli.setting(("x", "y"), help="Names.", choices=("x", "y", "z"))
    hidden: int = cli.setting(3, help="Not a flag.", flag=False)
    nested: _Nested = dataclasses.field(default_factory=_Nested)


def _parse(*argv):
    values = flags.FlagValues()
    cli.define_flags(_Config, values)
    values(["prog", *argv])
    return values


def test_flags_follow_the_dataclass():
    values = _parse("--kind=b", "--folds=1,3", "--skip", "--names=z")
    assert "hidden" not in values and "verbose" in values
    config = cli.config_from_flags(_Config, values)
    assert config == _Config(kind="b", folds=(1, 3), names=("z",), nested=_Nested(skip=True))


def test_bad_values_name_the_flag():
    with pytest.raises(flags.IllegalFlagValueError):
        _parse("--kind=c")
    with pytest.raises(ValueError, match="--folds: expected a comma-separated list of int"):
        cli.values_from_flags(_Config, _parse("--kind=a", "--folds=1,x"))
    with pytest.raises(ValueError, match=r"--names: \['w'\] not in"):
        cli.values_from_flags(_Config, _parse("--kind=a", "--names=w"))


def test_error_line_is_one_line():
    full = OSError(errno.ENOSPC, "No space left on device", "/run/ckpt.h5")
    assert "no space left on the device while writing /run/ckpt.h5" in cli.error_line(full)
    assert "rerun the same command" in cli.error_line(full)
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y.wav")
    assert cli.error_line(missing) == "/x/y.wav: No such file or directory"
    assert cli.error_line(ValueError("--pe [a, b]\n\nmore")) == "--pe [a, b]"

    class OpError(Exception):
        message = ("assertion failed: [keras_astpe: damaged TFRecord file] [a.tfrecord:] "
                   "[cut] [(make_dataset(skip_bad_records=True) skips and counts bad data)]\n"
                   "\t [[{{node Assert}}]] [Op:IteratorGetNext]")

    line = cli.error_line(OpError())
    assert "\n" not in line and "damaged TFRecord file a.tfrecord: cut" in line
    assert "--skip_bad_records" in line
    assert "node Assert" not in line and "Op:" not in line


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Named(cli.NamedConfigs):
    CONFIGS = {"paper": {"steps": 100, "folder": lambda s: f"runs/{s['kind']}-{s['steps']}"},
               "demo": {"steps": 2, "rate": 0.1, "folder": lambda s: "demo"}}

    kind: str = cli.setting("a", help="Kind.")
    steps: int = cli.setting(1, help="Steps.")
    rate: float = cli.setting(0.5, help="Rate.")
    folder: str = cli.setting("out", help="Folder.")
    data: str | None = cli.setting(None, help="Data.")

    @classmethod
    def choose(cls, given):
        """'paper' with --data, 'demo' without."""
        return "paper" if given.get("data") else "demo"


def _named(*argv):
    values = flags.FlagValues()
    cli.define_flags(_Named, values)
    values(["prog", *argv])
    return cli.config_from_flags(_Named, values), values


def test_named_configurations_and_the_flags_that_override_them():
    config, values = _named("--data=d", "--kind=b")
    assert (config.steps, config.rate, config.folder) == (100, 0.5, "runs/b-100")
    assert "(paper: 100, demo: 2)" in values["steps"].help and "'paper' with" in \
        values["config"].help
    config, _ = _named("--config=paper", "--steps=7")  # a flag overrides what depends on it
    assert (config.steps, config.folder, config.data) == (7, "runs/a-7", None)
    config, _ = _named("--rate=0.25")
    assert (config.steps, config.rate, config.folder) == (2, 0.25, "demo")
    config, _ = _named("--config=demo", "--folder=mine", "--data=d")
    assert (config.steps, config.folder) == (2, "mine")
    with pytest.raises(ValueError, match="--config must be one of"):
        _Named.named("other")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _WithOptions(cli.NamedConfigs):
    CONFIGS = {"mixed": {"nested": {"skip": True}}, "plain": {}}

    rate: float = cli.setting(0.5, help="Rate.")
    nested: _Nested = dataclasses.field(default_factory=_Nested)


def test_named_configurations_set_nested_options_field_by_field():
    values = flags.FlagValues()
    cli.define_flags(_WithOptions, values)
    values(["prog", "--config=mixed"])
    assert cli.config_from_flags(_WithOptions, values).nested.skip is True
    values = flags.FlagValues()
    cli.define_flags(_WithOptions, values)
    values(["prog", "--config=mixed", "--noskip"])  # a flag given overrides it
    assert cli.config_from_flags(_WithOptions, values).nested.skip is False
    assert _WithOptions.named("plain").nested.skip is False
    assert _WithOptions.named("mixed", nested=_Nested(skip=False)).nested.skip is False
