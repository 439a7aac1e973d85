"""Override any field of a paper's nested frozen config from the command line, type-checked.

    cfg = apply_overrides(get_config("toy"), ["seeds=[0]", "rm.lr=3e-4", "eval.sampled_n=0"])

A value is read as YAML (`3e-4`, `true`, `null`, `[0, 1]`, `student`) and checked against the field's
annotation (int, float, str, bool, `X | None`, `tuple[X, ...]`, `Literal`, a nested dataclass is
reached with a dotted path). An unknown key or a value of the wrong type raises `ConfigError` with one
line that names the key and what is valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad `--set key=value`; the message names the key and the valid keys or type."""


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"--set {key}: {value!r} is not {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"--set {key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]  # seeds=0 means (0,)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"--set {key}: needs {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"--set {key}: {value!r} is not a mapping")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"--set {key}: {value!r} is not true/false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"--set {key}: {value!r} is not an int")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"--set {key}: {value!r} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"--set {key}: {value!r} is not a string")
        return str(value)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(
            f"--set {key}: is a group; set one of its fields ({', '.join(f.name for f in dataclasses.fields(tp))})"
        )
    return value


def _set(cfg, path: list[str], raw: Any, full_key: str):
    names = [f.name for f in dataclasses.fields(cfg)]
    head = path[0]
    if head not in names:
        where = full_key[: -len(".".join(path))].rstrip(".") or type(cfg).__name__
        raise ConfigError(f"--set {full_key}: unknown key {head!r} in {where}; valid: {', '.join(names)}")
    current = getattr(cfg, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"--set {full_key}: {head!r} is a value, not a group")
        return dataclasses.replace(cfg, **{head: _set(current, path[1:], raw, full_key)})
    tp = _hints(type(cfg))[head]
    return dataclasses.replace(cfg, **{head: _coerce(raw, tp, full_key)})


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key.path=value` -> (key.path, value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def apply_overrides(cfg, assignments: Sequence[str]):
    """A copy of the frozen dataclass `cfg` with each `key.path=value` of `assignments` applied."""
    for text in assignments:
        key, value = parse_assignment(text)
        cfg = _set(cfg, key.split("."), value, key)
    return cfg


def config_dict(cfg) -> dict:
    """The resolved config as plain JSON-able data (for logs and provenance)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def format_config(cfg) -> str:
    """The resolved config, one `key.path = value` a line (what a run prints at start)."""
    lines: list[str] = []

    def walk(obj: dict, prefix: str) -> None:
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                lines.append(f"{prefix}{k} = {json.dumps(v)}")

    walk(config_dict(cfg), "")
    return "\n".join(lines)
