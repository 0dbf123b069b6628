"""The registry of adaptation methods: a config line ``methods: [lora, dora]`` names them.

Each method registers with its card (:class:`neuroadapt.method_cards.MethodCard`): paper,
family, tasks, backbones, inputs it needs and tunable settings with their defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from neuroadapt.method_cards import MethodCard

__all__ = ["METHODS", "available_methods", "get_method", "register_method"]

METHODS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_method(name: str, **card) -> Callable[[T], T]:
    """Class decorator: register a method class under ``name`` with its card (literal
    keyword arguments of :class:`MethodCard`, which the workflow reads from the source)."""

    def decorate(cls: T) -> T:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        cls.card = MethodCard(name=name, **card)
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
