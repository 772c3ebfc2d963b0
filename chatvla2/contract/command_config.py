"""A command's options as one frozen dataclass: its fields become the command's argparse arguments,
and the parsed values become the dataclass again, which checks itself in `__post_init__`. So a
command run from the shell and one called in code (`main(DemoConfig(episodes=1))`) take the same
typed config, refused alike, and each default is written once, in the field.

An option is a field with `field(default=..., metadata={...})` (lerobot's draccus configs and
openpi's config registry are the models, kept to the standard library), written with `option`:
`decode_calls: int = option("decode steps kept per observation", 8, metavar="N")`. Its metadata:

    help        the help text; a field without "help" is not an option (it keeps its default)
    flag        "--name", or ("--name", "--alias", ...); default: "--" + the field's name, dashed
    positional  True: a positional argument, named by the field (its `metavar` is shown)
    choices     the accepted values: argparse refuses others, with the command's usage
    metavar     the value's name in the help
    type        a function of the text given (default: int or float, from the annotation)
    group       a titled section of the help
    exclusive   the name of a mutually exclusive group (argparse refuses two of its options)

The annotation says how the text is read: `bool` is a switch (store_true, or store_false when the
default is True), `tuple[X, ...]` repeatable (a positional takes any number), `X | None` as X. A
field without a default is a required option (the dataclasses are kw_only, so it may come first).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import numbers
import types
import typing
from typing import Any, TypeVar

from chatvla2.contract.errors import InvalidInput

Config = TypeVar("Config")


def option(
    help: str,
    default: Any = dataclasses.MISSING,
    *,
    metavar: str | None = None,
    flag: str | tuple[str, ...] | None = None,
    choices: Any = None,
    type: Any = None,
    group: str | None = None,
    exclusive: str | None = None,
    positional: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A field that is a command-line option: `dataclasses.field` with the metadata (module
    docstring) of the keywords given; no `default` (nor `default_factory`): a required option."""
    given = dict(flag=flag, positional=positional or None, choices=choices, metavar=metavar, type=type, group=group, exclusive=exclusive)
    metadata = {key: value for key, value in given.items() if value is not None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata={**metadata, "help": help})


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that are command-line options (those with a "help")."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def option_flags(field_: dataclasses.Field) -> tuple[str, ...]:
    flag = field_.metadata.get("flag") or "--" + field_.name.replace("_", "-")
    return (flag,) if isinstance(flag, str) else tuple(flag)


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argparse argument per option of the dataclass `cls` (module docstring)."""
    hints = typing.get_type_hints(cls)
    sections: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for field_ in option_fields(cls):
        meta = field_.metadata
        where: Any = parser
        if "group" in meta:
            if meta["group"] not in sections:
                sections[meta["group"]] = parser.add_argument_group(meta["group"])
            where = sections[meta["group"]]
        if "exclusive" in meta:
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = where.add_mutually_exclusive_group()
            where = exclusive[meta["exclusive"]]
        kind, repeated = _value_type(hints[field_.name])
        default = _default(field_)
        kwargs: dict[str, Any] = {"help": meta["help"]}
        if "choices" in meta:
            kwargs["choices"] = list(meta["choices"])
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if kind is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        elif meta.get("type") or kind in (int, float):
            kwargs["type"] = meta.get("type") or kind
        if meta.get("positional"):
            if repeated:
                kwargs["nargs"] = "*"
            elif default is not dataclasses.MISSING:
                kwargs["nargs"] = "?"
            if default is not dataclasses.MISSING:
                kwargs["default"] = default
            where.add_argument(field_.name, **kwargs)
            continue
        if repeated:
            kwargs["action"] = "append"  # from None: argparse would append to (and share) a default list
        elif default is not dataclasses.MISSING:
            kwargs["default"] = default
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        where.add_argument(*option_flags(field_), dest=field_.name, **kwargs)


def config_from_namespace(cls: type[Config], namespace: argparse.Namespace) -> Config:
    """The dataclass from parsed arguments (its `__post_init__` checks the values)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field_ in option_fields(cls):
        value = getattr(namespace, field_.name)
        if _value_type(hints[field_.name])[1]:
            value = _default(field_) if value is None else tuple(value)
        values[field_.name] = value
    return cls(**values)


def parse_config(cls: type[Config], argv: list[str], prog: str | None = None) -> Config:
    """The dataclass from a command line of its options alone (a command's own entry point, tests)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_options(parser, cls)
    namespace, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(unknown_options_message(cls, extras))
    return config_from_namespace(cls, namespace)


def unknown_options_message(cls: type, extras: list[str]) -> str:
    """argparse's "unrecognized arguments: ..." with the closest option of `cls` for each unknown
    one, e.g. `--duraton 3` -> "(did you mean --duration?)"."""
    known = ["--help", *(flag for f in option_fields(cls) for flag in option_flags(f) if flag.startswith("-"))]
    hints = []
    for given in (extra.split("=", 1)[0] for extra in extras if extra.startswith("--")):
        close = difflib.get_close_matches(given, known, n=1)
        if close:
            hints.append((given, close[0]))
    message = f"unrecognized arguments: {' '.join(extras)}"
    if len(hints) == 1:
        return f"{message} (did you mean {hints[0][1]}?)"
    if hints:
        return f"{message} (did you mean {', '.join(f'{close} for {given}' for given, close in hints)}?)"
    return message


def check_integer(flag: str, value: object, minimum: int) -> None:
    """An option's whole number, at least `minimum`: else one line naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidInput(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _default(field_: dataclasses.Field) -> Any:
    if field_.default_factory is not dataclasses.MISSING:
        return field_.default_factory()
    return field_.default


def _value_type(annotation: Any) -> tuple[type, bool]:
    """(the type one value is read as, whether the option repeats) of a field's annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        present = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = present[0] if len(present) == 1 else str
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False
