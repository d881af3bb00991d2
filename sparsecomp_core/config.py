"""Typed configuration: dataclasses filled from YAML with strict validation.

Every config is a (nested) dataclass. ``load_config(Cls, path)`` reads YAML,
rejects unknown keys and wrong types with the full key path in the message,
and fills defaults for keys not given. No registries, no string-typed magic:
where a choice is a string it is a ``Literal`` checked here.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or dict does not match its dataclass."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {_type_name(tp)}: " + "; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_tp, value_tp = args or (Any, Any)
        return {_convert(k, key_tp, f"{where}.<key>"): _convert(v, value_tp, f"{where}.{k}")
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {_type_name(tp)}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad types raise ConfigError."""
    label = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{label}.{name}" if where else name)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{label}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ checks
        raise ConfigError(f"{label}: {exc}") from exc


def to_dict(config: Any) -> dict:
    """Plain-data form of a config dataclass (for YAML dumps and checkpoints)."""
    return dataclasses.asdict(config)


def merged(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def base_chain(path: str | Path) -> list[tuple[Path, Any]]:
    """``path`` and the files it derives from through a top-level ``base: <name or
    path>`` (a bare name means ``<name>.yaml`` beside the file), nearest first, each
    with its YAML content less the ``base`` key."""
    chain: list[tuple[Path, Any]] = []
    path = Path(path).resolve()
    while True:
        if any(path == seen for seen, _ in chain):
            names = " -> ".join(seen.name for seen, _ in (*chain, (path, None)))
            raise ConfigError(f"{path}: 'base' chain loops: {names}")
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(data, dict) or "base" not in data:
            return [*chain, (path, data)]
        data = dict(data)
        base = data.pop("base")
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a config name or path, got {base!r}")
        chain.append((path, data))
        path = (path.parent / (base if Path(base).suffix else f"{base}.yaml")).resolve()


def read_yaml_with_base(path: str | Path) -> Any:
    """A YAML mapping; a top-level ``base: <name or path>`` names the file it
    derives from (a bare name means ``<name>.yaml`` beside this file), whose
    keys this file overrides. So a fleet config lists only what it changes."""
    chain = base_chain(path)
    data = chain[-1][1]
    for _, override in reversed(chain[:-1]):
        data = merged(data or {}, override)
    return data


def load_config(cls: type[T], path: str | Path) -> T:
    """Read ``path`` (YAML, optionally derived from a ``base`` file) into dataclass ``cls``."""
    path = Path(path)
    data = read_yaml_with_base(path)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
