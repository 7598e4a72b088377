"""Command-line options generated from the configuration dataclasses, so help text is written once.

Options a user does not give stay unset (``None``), so that flags override a ``--config`` file,
which overrides the dataclass defaults.
"""

from __future__ import annotations

import argparse
import json
import tomllib
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any


def bounded(kind: type, low: float | None = None, high: float | None = None, open_low: bool = False):
    """An argparse ``type`` reading ``kind`` (int or float) within ``[low, high]`` (``(low, high]``
    with ``open_low``); anything else is a usage error naming the flag."""
    words = {int: "a whole number", float: "a number"}[kind]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {words}") from None
        if (
            value != value
            or (low is not None and (value <= low if open_low else value < low))
            or (high is not None and value > high)
        ):
            parts = [] if low is None else [f"above {low}" if open_low else f"at least {low}"]
            limits = " and ".join(parts + ([] if high is None else [f"at most {high}"]))
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be {limits}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _choices(annotation: Any) -> tuple | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return None


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_dataclass_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    prefix: str,
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
    flag_prefix: str = "",
    defaults: Any = None,
) -> None:
    """One ``--flag`` per field of ``cls`` (``--{flag_prefix}{field}``, ``dest`` ``prefix + field``),
    help from the field's metadata; ``rename`` maps a field to another flag name; ``defaults``, an
    instance of ``cls``, gives the defaults shown when they are not the class's own."""
    hints = typing.get_type_hints(cls)
    rename = rename or {}
    for field in fields(cls):
        if field.name in skip:
            continue
        annotation = _unwrap_optional(hints[field.name])
        flag = "--" + rename.get(field.name, flag_prefix + field.name).replace("_", "-")
        if defaults is not None:
            default = getattr(defaults, field.name)
        else:
            default = field.default if field.default is not MISSING else None
        help_text = field.metadata.get("help", "")
        if default is not None and default != () and "(default" not in help_text:
            help_text += f" (default: {shown_default(default)})"
        kwargs: dict[str, Any] = {"dest": prefix + field.name, "default": None, "help": help_text}
        kwargs["metavar"] = field.metadata.get("metavar") or placeholder(field.name, annotation)
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            del kwargs["metavar"]
        elif typing.get_origin(annotation) is tuple:
            kwargs.update(nargs="+", type=typing.get_args(annotation)[0])
        elif (choices := _choices(annotation)) is not None:
            kwargs["choices"] = choices
            kwargs.pop("metavar")  # argparse shows the choices
        elif "choices" in field.metadata:  # a registry's names, read when the parser is built
            kwargs["choices"] = field.metadata["choices"]()
            kwargs.pop("metavar")
        else:
            kwargs["type"] = annotation if annotation in (int, float) else str
        parser.add_argument(flag, **kwargs)


_RATE_WORDS = ("rate", "fraction", "eps", "probability", "dropout")


def placeholder(name: str, annotation: Any) -> str:
    """What a flag's value is, in ``--help``: ``N`` (a whole number), ``RATE`` (a share or
    probability), ``X`` (another number), else the setting's own name (``DEVICE``, ``MODEL``)."""
    item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is tuple else annotation
    if item is int:
        return "N"
    if item is float:
        return "RATE" if any(word in name for word in _RATE_WORDS) else "X"
    return name.rsplit("_", 1)[-1].upper() if name.endswith(("_dir", "_file", "_path")) else name.upper()


def shown_default(value: Any) -> str:
    """A default as a user types it: ``256 64`` for a tuple, not ``(256, 64)``."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return str(value)


def dataclass_values(args: argparse.Namespace, cls: type, prefix: str) -> dict[str, Any]:
    """The fields of ``cls`` that the user set on the command line."""
    values = {}
    for field in fields(cls):
        value = getattr(args, prefix + field.name, None)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return values


def read_config_file(path: str | Path, sections: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """A TOML or JSON file of sections (``[train]``, ``[model]``, ``[encoder]``, ...). ``sections``,
    the ones the command reads: any other (a misspelt ``[modle]``) is refused, never ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        content = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot parse it ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a table of sections, got {type(content).__name__}")
    if sections is not None:
        unknown = sorted(set(content) - set(sections))
        if unknown:
            known = ", ".join(f"[{name}]" for name in sections)
            raise ValueError(f"{path}: unknown section(s) {unknown}; this command reads {known}")
    for name, section in content.items():
        if not isinstance(section, dict):
            raise ValueError(f"{path}: [{name}] must be a table of settings, got {type(section).__name__}")
        content[name] = ConfigSection(section, where=f"{path} [{name}]")
    return content


class ConfigSection(dict):
    """A config file's section; ``where`` (its file and name) is what messages about it name."""

    def __init__(self, values: dict, where: str):
        super().__init__(values)
        self.where = where


def _type_problem(value: Any, annotation: Any, choices: tuple | None) -> str | None:
    """What a config-file value should be, where it is not (TOML and JSON carry types; a flag's
    value is parsed by argparse), or None."""
    optional = annotation is not _unwrap_optional(annotation)
    annotation = _unwrap_optional(annotation)
    if value is None:
        return None if optional else "a value (not null)"
    if choices is not None:
        return None if value in choices else f"one of {list(choices)}"
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if annotation is float:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
    if annotation is str:
        return None if isinstance(value, str) else "a string"
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        if not isinstance(value, list | tuple):
            return "a list"
        bad = next((v for v in value if _type_problem(v, item, _choices(item))), None)
        return None if bad is None else f"a list of {getattr(item, '__name__', item)} (not {bad!r})"
    return None


def build_config(cls: type, file_section: dict[str, Any] | None, overrides: dict[str, Any], where: str):
    """``cls`` from a config-file section overridden by command-line values; unknown keys are errors."""
    where = getattr(file_section, "where", where)
    by_name = {f.name: f for f in fields(cls)}
    section = dict(file_section or {})
    unknown = sorted(set(section) - set(by_name))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(by_name)}")
    hints = typing.get_type_hints(cls)
    for key, value in section.items():
        metadata = by_name[key].metadata
        choices = _choices(_unwrap_optional(hints[key])) or (
            metadata["choices"]() if "choices" in metadata else None
        )
        if (should := _type_problem(value, hints[key], choices)) is not None:
            raise ValueError(f"{where}: {key} must be {should}, got {value!r}")
        if isinstance(value, list) and typing.get_origin(_unwrap_optional(hints[key])) is tuple:
            section[key] = tuple(value)
    try:
        return cls(**{**section, **overrides})
    except ValueError as error:
        # A value the file set and the configuration refuses: name the file and section too.
        if any(key in str(error) for key in section if key not in overrides) and hasattr(
            file_section, "where"
        ):
            raise ValueError(f"{where}: {error}") from None
        raise
