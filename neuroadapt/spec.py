"""Turning a config mapping into a settings dataclass (generator specs, split settings), with
clear errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from neuroadapt.errors import ConfigError

Spec = TypeVar("Spec")


def spec_from_mapping(cls: type[Spec], mapping: Mapping[str, Any] | None, where: str) -> Spec:
    """Build the frozen dataclass ``cls`` from ``mapping``; unknown keys are errors.

    ``where`` is the config path of the mapping (e.g. ``datasets.demo_dwi.synthetic``) so
    the error names the exact key to fix. Lists become tuples so specs stay hashable.
    """
    mapping = dict(mapping or {})
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}",
            "is not a parameter of this generator",
            f"use one of: {', '.join(sorted(fields))}",
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in mapping.items():
        if isinstance(value, list):
            value = tuple(value)
        allowed = _allowed_types(hints[name])
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(
                f"{where}.{name}", f"must be {names}, got {value!r}", f"give a {names}"
            )
        values[name] = value
    spec = cls(**values)
    check = getattr(spec, "check", None)
    if check is not None:
        check(where)
    return spec


def _allowed_types(hint) -> tuple[type, ...]:
    """Plain types a field accepts: ``float | None`` -> (float, NoneType)."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(m) or m for m in members)
