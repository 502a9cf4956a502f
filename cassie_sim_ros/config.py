"""Typed dataclass configs: load from YAML or dicts, apply dotted overrides, dump back.

Every config in the project is a frozen ``@dataclass`` tree. This module is the one way to build
one from untrusted input: unknown keys, wrong types and values outside a ``Literal`` raise
``ConfigError`` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import numpy as np
import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of its allowed values."""


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict, recursing into nested dataclasses."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]}; allowed keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    try:
        obj = cls(**kwargs)
    except ConfigError as err:
        # A dataclass names its own field; the caller knows where the dataclass sits.
        raise ConfigError(f"{path}.{err}" if path else str(err)) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path or '<root>'}: {err}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML-safe) view of a dataclass tree."""
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class _Mapping(typing.NamedTuple):
    """A ``dict[str, value]`` field: named entries, each a ``value``."""

    value: Any


def _entry_type(owner: Any, name: str) -> Any:
    """The type of ``owner``'s entry ``name``: a dataclass field's type (a ``_Mapping`` for a
    dict field) or a mapping's value type; None when unknown."""
    if isinstance(owner, _Mapping):
        return owner.value
    if dataclasses.is_dataclass(owner) and isinstance(owner, type):
        hint = get_type_hints(owner).get(name)
        return _Mapping(get_args(hint)[1]) if get_origin(hint) is dict else hint
    return None


def apply_overrides(obj: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Return a copy of ``obj`` with ``key.sub=value`` overrides (values parsed as YAML).

    Keys must exist, except a new entry of a named mapping (a reward term:
    ``env.rewards.lateral_position={weight: 0.1}``), which is then checked like the others.
    """
    data = to_dict(obj)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        node, owner = data, type(obj)
        parts = key.strip().split(".")
        for depth, part in enumerate(parts):
            new_entry = depth == len(parts) - 1 and isinstance(owner, _Mapping)
            if not isinstance(node, dict) or (part not in node and not new_entry):
                raise ConfigError(f"unknown key {'.'.join(parts[:depth + 1])} in override {item!r}")
            if depth == len(parts) - 1:
                node[part] = yaml.safe_load(raw)
            else:
                node, owner = node[part], _entry_type(owner, part)
    return from_dict(type(obj), data)


def load_yaml(cls: type[T], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load ``cls`` from a YAML file, then apply dotted overrides."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    return apply_overrides(from_dict(cls, data), overrides)


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of the allowed values {allowed}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1
                          else f"{key}: {value!r} fits none of {hint}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            items = [_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, key): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any or hint is typing.Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads 3e-4 (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value
