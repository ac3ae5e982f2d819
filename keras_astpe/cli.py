"""Command lines generated from config dataclasses: one flag style for every recipe and tool.

A recipe's settings are the fields of one frozen dataclass; each field declared with
`setting(...)` becomes an absl flag of the same name, type, default and help, so a new
setting is one edit:

    @dataclasses.dataclass(frozen=True)
    class PlotConfig:
        model: str = setting(help="Saved model (.keras) to analyse.", required=True)
        block: int | None = setting(None, help="Encoder block to plot.")

    if __name__ == "__main__":
        cli.run(main, PlotConfig)     # main(config) gets PlotConfig built from the flags

A config class may also hold named configurations (`NamedConfigs`: the paper's, the demo's,
...): `--config=NAME` starts from one, and every flag given on the command line overrides its
field; without `--config`, the class chooses one from the flags given (e.g. the paper's with
`--data_dir`, the demo's without). `--help` shows each named configuration's value next to a
field's default.

`run` also ends every failure a user can cause (a bad flag, a missing or damaged file, an
unwritable folder, a full disk) with one line, `error: ...`, and exit code 1; `--verbose`
shows the traceback instead.
"""

import dataclasses
import errno
import re
import sys
import types
import typing

from absl import app, flags, logging

_VERBOSE = "verbose"
_CONFIG = "config"
# The flags `define_flags` defines belong to its caller (the recipe): `--help` lists them.
flags.disclaim_key_flags()


def setting(default=dataclasses.MISSING, *, help, choices=None, required=False, flag=True):
    """A dataclass field that is also a command-line flag.

    Args:
        default: the field's default (omit for a required positional field).
        help: the flag's help text.
        choices: allowed values (an enum flag).
        required: the flag must be given.
        flag: False keeps the field off the command line.
    """
    metadata = {"help": help, "choices": None if choices is None else tuple(choices),
                "required": required, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


class NamedConfigs:
    """A config dataclass with named configurations, each a dict of field values.

    `CONFIGS[name]` maps fields to values, or to functions of the other settings (the
    values given and the configuration's plain values) for defaults that depend on them,
    such as an output folder named after the positional encoding. A field holding a nested
    config dataclass (the data options) takes a dict of its fields, from a configuration
    or given, merged field by field. `choose(given)` names the configuration used when none
    is asked for.
    """

    CONFIGS = {}

    @classmethod
    def choose(cls, given):
        return next(iter(cls.CONFIGS))

    @classmethod
    def named(cls, name=None, **given):
        """The config of configuration `name` (None: `choose`), with the `given` fields."""
        name = name or cls.choose(given)
        if name not in cls.CONFIGS:
            raise ValueError(f"--config must be one of {sorted(cls.CONFIGS)}, got {name!r}")
        configured = cls.CONFIGS[name]
        given = {**given, **_nested_settings(cls, configured, given)}
        named = {key: value for key, value in configured.items() if key not in given}
        plain = {key: value for key, value in named.items() if not callable(value)}
        defaults = {field.name: field.default for field in dataclasses.fields(cls)
                    if field.default is not dataclasses.MISSING}
        settings = {**defaults, **plain, **given}
        derived = {key: value(settings) for key, value in named.items() if callable(value)}
        return cls(**plain, **given, **derived)


def _nested_settings(cls, configured, given):
    """The nested config dataclasses of `cls` whose fields a configuration or `given` set
    as a dict: the default, then the configuration's fields, then the given ones."""
    merged = {}
    for field in dataclasses.fields(cls):
        ours, theirs = configured.get(field.name), given.get(field.name)
        if not isinstance(ours, dict) and not isinstance(theirs, dict):
            continue
        if theirs is not None and not isinstance(theirs, dict):
            merged[field.name] = theirs  # a whole nested config given: it is used as it is
            continue
        base = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                else field.default)
        merged[field.name] = dataclasses.replace(base, **{**(ours or {}), **(theirs or {})})
    return merged


def _base_type(annotation):
    """`(type, is_sequence)` of a field annotation: `int | None` -> int, `tuple[int, ...]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        origin = typing.get_origin(annotation)
    if origin in (tuple, list) or annotation in (tuple, list):
        args = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
        return (args[0] if args else str), True
    return annotation, False


def flag_fields(config_cls):
    """The fields of `config_cls` that are flags, with their resolved annotations.

    The fields of a nested config dataclass (e.g. the data options every training recipe
    shares) are flags of their own, listed after the field that holds them.
    """
    hints = typing.get_type_hints(config_cls)
    fields = []
    for field in dataclasses.fields(config_cls):
        if dataclasses.is_dataclass(hints[field.name]):
            fields.extend(flag_fields(hints[field.name]))
        elif field.metadata.get("flag"):
            fields.append((field, hints[field.name]))
    return fields


def define_flags(config_cls, flag_values=flags.FLAGS):
    """Defines one flag per `setting` field of `config_cls` (and `--verbose`)."""
    for field, annotation in flag_fields(config_cls):
        meta = field.metadata
        kind, sequence = _base_type(annotation)
        default = None if field.default is dataclasses.MISSING else field.default
        help_text = meta["help"]
        named = {name: values[field.name] for name, values in
                 getattr(config_cls, "CONFIGS", {}).items()
                 if field.name in values and not callable(values[field.name])}
        if named:
            shown = ", ".join(f"{name}: {value}" for name, value in named.items())
            help_text = f"{help_text} ({shown})"
        common = {"flag_values": flag_values, "required": meta["required"]}
        if meta["choices"] and not sequence:
            flags.DEFINE_enum(field.name, default, [str(c) for c in meta["choices"]],
                              help_text, **common)
        elif sequence:
            flags.DEFINE_list(field.name, None if default is None else
                              [str(v) for v in default], help_text, **common)
        elif kind is bool:
            flags.DEFINE_bool(field.name, default, help_text, **common)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, help_text, **common)
        elif kind is float:
            flags.DEFINE_float(field.name, default, help_text, **common)
        else:
            flags.DEFINE_string(field.name, default, help_text, **common)
    if getattr(config_cls, "CONFIGS", None) and _CONFIG not in flag_values:
        flags.DEFINE_enum(_CONFIG, None, list(config_cls.CONFIGS),
                          f"Named configuration to start from: {config_cls.choose.__doc__} "
                          "Flags given override its values.", flag_values=flag_values)
    if _VERBOSE not in flag_values:
        flags.DEFINE_bool(_VERBOSE, False, "On an error, show the traceback instead of one "
                          "line.", flag_values=flag_values)


def values_from_flags(config_cls, flag_values=flags.FLAGS):
    """`{field: value}` of the flags of `config_cls`, converted to the field types.

    Sequence flags become tuples of the element type; a sequence element of the wrong type
    or outside the field's `choices` is a `ValueError` naming the flag. A nested config
    dataclass is built from its own flags.
    """
    hints = typing.get_type_hints(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            values[field.name] = annotation(**values_from_flags(annotation, flag_values))
        elif field.metadata.get("flag"):
            values[field.name] = _flag_value(field, annotation, flag_values)
    return values


def _flag_value(field, annotation, flag_values):
    value = flag_values[field.name].value
    kind, sequence = _base_type(annotation)
    if not sequence or value is None:
        return value
    try:
        value = tuple(kind(item) for item in value)
    except ValueError:
        raise ValueError(f"--{field.name}: expected a comma-separated list of "
                         f"{kind.__name__}, got {','.join(value)!r}") from None
    choices = field.metadata["choices"]
    bad = [item for item in value if choices and item not in choices]
    if bad:
        raise ValueError(f"--{field.name}: {bad} not in {list(choices)}")
    return value


def config_from_flags(config_cls, flag_values=flags.FLAGS):
    """Builds `config_cls` from the flags: from its named configuration (`NamedConfigs`)
    and the flags given, else from every flag."""
    values = values_from_flags(config_cls, flag_values)
    if getattr(config_cls, "CONFIGS", None):
        return config_cls.named(flag_values[_CONFIG].value,
                                **_given(config_cls, values, flag_values))
    return config_cls(**values)


def _given(config_cls, values, flag_values):
    """The values of the flags given on the command line; of a nested config dataclass, a
    dict of its fields whose flags were given."""
    hints = typing.get_type_hints(config_cls)
    given = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]):
            nested = {field.name: getattr(value, field.name)
                      for field in dataclasses.fields(hints[name])
                      if field.name in flag_values and flag_values[field.name].present}
            if nested:
                given[name] = nested
        elif flag_values[name].present:
            given[name] = value
    return given


def error_line(error):
    """One line that says what went wrong, for the errors a user can cause."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" while writing {error.filename}" if error.filename else ""
        return (f"no space left on the device{where}. Free some space and rerun the same "
                "command: a training run resumes from its last checkpoint.")
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    # TensorFlow's runtime errors: keep what the assertion says, drop the graph context.
    match = re.search(r"keras_astpe: (.*)", message, flags=re.S)
    if match:
        message = match.group(1).split("\n\t")[0]
        message = re.sub(r"\] \[|^\[|\]$", " ", message.strip())
    message = re.sub(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]", "", message)
    message = " ".join(message.split("\n\n")[0].split())
    return message.replace("make_dataset(skip_bad_records=True)", "--skip_bad_records")


def _user_errors():
    """Exception types that bad input, files or flags cause (tracebacks of others stay)."""
    kinds = [ValueError, OSError, RuntimeError, KeyError, EOFError, ImportError]
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None:
        kinds.append(tensorflow.errors.OpError)
    return tuple(kinds)


def run(main, config_cls, flag_values=flags.FLAGS):
    """Defines the flags of `config_cls`, parses the command line and calls `main(config)`.

    Any error a user can cause (bad flag values, missing or damaged files, an unwritable
    folder, a full disk) ends with `error: <one line>` on stderr and exit code 1;
    `--verbose` shows the traceback instead.
    """
    define_flags(config_cls, flag_values)

    def entry(argv):
        if not flag_values[_VERBOSE].value:
            logging.set_verbosity(logging.WARNING)  # absl shows INFO records otherwise
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        try:
            main(config_from_flags(config_cls, flag_values))
        except KeyboardInterrupt:
            sys.exit("\ninterrupted: rerun the same command to resume.")
        except _user_errors() as error:
            if flag_values[_VERBOSE].value:
                raise
            sys.stdout.flush()
            sys.exit(f"\nerror: {error_line(error)}")  # on its own line, after progress bars

    app.run(entry)
