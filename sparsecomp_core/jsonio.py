"""Strict JSON for everything we write: an undefined figure (NaN, +-inf) is
written as ``null``, never as the bare ``NaN`` / ``Infinity`` that Python's
json module emits by default and that other JSON parsers reject."""
from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN / inf floats replaced by None, numpy scalars and arrays
    turned into Python numbers and lists, tuples into lists (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):            # numpy arrays and scalars, torch tensors
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    return value                            # json.dumps raises on anything else, as it should


def dumps(value: Any, **kwargs) -> str:
    """json.dumps of ``json_safe(value)`` with ``allow_nan=False``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def _reject_constant(name: str):
    raise ValueError(f"invalid JSON constant {name}")


def loads_strict(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity (as strict parsers do)."""
    return json.loads(text, parse_constant=_reject_constant)
