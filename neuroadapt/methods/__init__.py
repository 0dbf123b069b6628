"""Adaptation methods, found by name: ``get_method("lora")(backbone, task="binary")``.

Importing this package registers every method module below.
"""

from neuroadapt.methods import (  # noqa: F401
    dora,
    full_finetune,
    linear_probe,
    lora,
    molre,
    scratch,
)
from neuroadapt.methods.base import AdaptationMethod, ParameterReport, count_parameters
from neuroadapt.methods.registry import available_methods, get_method, register_method

__all__ = [
    "AdaptationMethod",
    "ParameterReport",
    "available_methods",
    "count_parameters",
    "get_method",
    "register_method",
]
