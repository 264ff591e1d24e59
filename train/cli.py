"""Command lines from dataclasses: each field is an option, its `help` metadata the text, its default shown."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing


def _base_type(tp):
    """int for `int`, `int | None`, `list[int]`...; returns (type, is_list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def build_parser(cls, description: str, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        tp, is_list = _base_type(hints[f.name])
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=tp, nargs="+" if is_list else None, default=default, help=help_text,
                                metavar=f.metadata.get("metavar"), choices=f.metadata.get("choices"))
    return parser


def parse_into(cls, argv: list[str] | None, description: str, prog: str):
    parser = build_parser(cls, description, prog)
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)  # exits 2 with a message on unknown options
    return cls(**vars(ns))
