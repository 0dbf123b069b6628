"""What each adaptation method says about itself, read without importing it.

Every method class is registered with its card, ``@register_method("lora", paper=...,
family=..., tasks=..., backbones=..., needs_inputs=..., tunable=...)`` in its own module
(``neuroadapt/methods/``). The workflow, the config checks and the schema need those cards
at start-up, where importing the method modules (torch, peft, monai: about 10 s) would slow
every Snakemake start and every cluster job; so :func:`method_cards` reads the decorator
calls from the modules' source with :mod:`ast`. The cards are therefore plain literals, and
a test checks that the cards read here are the ones the registry holds after import.

A new method is one module with its card plus its tests: the schema's method enums, the
methods each task trains (:mod:`neuroadapt.experiments`) and the start-up messages of
:mod:`neuroadapt.config` follow from the cards.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BACKBONE_KINDS",
    "FAMILIES",
    "MethodCard",
    "cards_of_family",
    "method_cards",
]

METHODS_DIR = Path(__file__).resolve().parent / "methods"
#: Kinds of method: one image backbone + head; several modalities fused for one label;
#: segmentation + survival on CT (and PET).
FAMILIES = ("image", "multimodal", "segmentation_survival")
#: What a method needs its backbone to provide; the backbone names of each kind are in
#: :mod:`neuroadapt.experiments` (a test keeps them equal to the backbone registry).
BACKBONE_KINDS = ("features", "vit", "segmentation")


@dataclass(frozen=True)
class MethodCard:
    """A method's description, given at its registration.

    ``tunable`` maps the constructor's keyword arguments that equal-budget tuning chooses
    (learning rates ``lr``/``lr_<group>``, rank ``r``) to their defaults: the paper's values
    where the paper states them (the module docstring says which). Their search ranges are
    the experiment's ``training.tuning.lr`` and ``rank``, the same for every method.
    ``uses_phase1``: the method builds on paper 4's phase-1 models (``unimodal_<m>``)."""

    name: str
    paper: str
    family: str
    tasks: tuple[str, ...]
    backbones: str
    tunable: dict = field(default_factory=dict)
    needs_inputs: tuple[str, ...] = ()
    #: Paper 4's phase 2: the method reads the frozen phase-1 models (``unimodal_<m>``) of
    #: the same fold, which the workflow then trains first (:mod:`neuroadapt.methods.unimodal`).
    uses_phase1: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name}: family {self.family!r} not in {FAMILIES}")
        if self.backbones not in BACKBONE_KINDS:
            raise ValueError(
                f"method {self.name}: backbones {self.backbones!r} not in {BACKBONE_KINDS}"
            )
        odd = [k for k in self.tunable if not (k == "r" or k == "lr" or k.startswith("lr_"))]
        if odd:
            raise ValueError(f"method {self.name}: tunable {odd} are not lr, lr_<group> or r")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "needs_inputs", tuple(self.needs_inputs))


def _decorator_cards(path: Path) -> list[MethodCard]:
    """The ``register_method(...)`` decorator calls of one module, as cards."""
    cards = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.ClassDef):
            continue
        for decorator in node.decorator_list:
            if (
                isinstance(decorator, ast.Call)
                and isinstance(decorator.func, ast.Name)
                and decorator.func.id == "register_method"
            ):
                try:
                    name = ast.literal_eval(decorator.args[0])
                    card = {k.arg: ast.literal_eval(k.value) for k in decorator.keywords}
                except (IndexError, ValueError) as error:
                    raise ValueError(
                        f"{path}:{decorator.lineno}: register_method needs the method's name "
                        f"and its card as literals (read without importing the module): {error}"
                    ) from None
                cards.append(MethodCard(name=name, **card))
    return cards


@functools.cache
def method_cards() -> dict[str, MethodCard]:
    """Every method's card by name, read from ``neuroadapt/methods/*.py``."""
    cards: dict[str, MethodCard] = {}
    for path in sorted(METHODS_DIR.glob("*.py")):
        for card in _decorator_cards(path):
            if card.name in cards:
                raise ValueError(f"method {card.name!r} is registered twice ({path})")
            cards[card.name] = card
    return cards


def cards_of_family(family: str) -> list[MethodCard]:
    """The cards of one family, by name."""
    return [card for _, card in sorted(method_cards().items()) if card.family == family]
