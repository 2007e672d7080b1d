"""Dataclass configs from the command line: `--config recipe.yaml` plus `--field value` overrides.

The same idea as transformers' HfArgumentParser (used by TrlParser), without the dependency,
so that the phantom and eval entry points stay light. Fields of several dataclasses share one
flat namespace; a field may appear in a YAML recipe or on the command line (CLI wins).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def _base_type(tp: Any) -> Any:
    """`int | None` -> int; Literal stays a Literal; plain types pass through."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _converter(tp: Any):
    tp = _base_type(tp)
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), choices
    if tp is bool:
        return (lambda s: {"true": True, "false": False, "1": True, "0": False}[s.lower()]), None
    return tp, None


def parse_config(types_: tuple[type, ...], argv: list[str] | None = None, description: str | None = None,
                 positional: tuple[str, ...] = ()) -> tuple:
    """Instances of `types_` from an optional YAML recipe (--config) and CLI overrides."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML recipe; command-line flags override it")
    owners: dict[str, type] = {}
    for cls in types_:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in owners:
                raise ValueError(f"field {f.name!r} is defined by both {owners[f.name].__name__} and {cls.__name__}")
            owners[f.name] = cls
            conv, choices = _converter(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = f.metadata.get("help", "")
            if f.name in positional:
                parser.add_argument(f.name, type=conv, choices=choices, nargs="?", default=argparse.SUPPRESS,
                                    help=help_text)
            else:
                parser.add_argument(f"--{f.name}", f"--{f.name.replace('_', '-')}", dest=f.name, type=conv,
                                    choices=choices, default=argparse.SUPPRESS, help=f"{help_text} (default: {default})")
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    recipe = args.pop("config", None)
    if recipe is not None:
        if not recipe.is_file():
            parser.error(f"--config {recipe}: no such file")
        loaded = yaml.safe_load(recipe.read_text()) or {}
        if not isinstance(loaded, dict):
            parser.error(f"--config {recipe}: expected a mapping of field: value")
        unknown = sorted(set(loaded) - set(owners))
        if unknown:
            parser.error(f"--config {recipe}: unknown field(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update(args)
    out = []
    for cls in types_:
        kwargs = {k: v for k, v in values.items() if owners.get(k) is cls}
        try:
            out.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            parser.error(str(e))
    return tuple(out)
