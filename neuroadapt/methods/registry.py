"""The registry of adaptation methods: a config line ``methods: [lora, dora]`` names them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["METHODS", "available_methods", "get_method", "register_method"]

METHODS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: register an ``AdaptationMethod`` subclass under ``name``."""

    def decorate(cls: T) -> T:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str) -> type:
    """The method class registered as ``name``; construct it with a backbone."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)
