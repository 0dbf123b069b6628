"""Adaptation methods, found by name: ``get_method("lora")(backbone, task="binary")``.

Importing this package registers every method module below.
"""

from neuroadapt.methods import (  # noqa: F401
    anchored_qformer,
    brain_adapter,
    dora,
    full_finetune,
    fusion_baselines,
    linear_probe,
    lora,
    molre,
    pemma,
    scratch,
    unimodal,
)
from neuroadapt.methods.base import (
    AdaptationMethod,
    Method,
    MultimodalMethod,
    ParameterReport,
    count_parameters,
)
from neuroadapt.methods.registry import available_methods, get_method, register_method

__all__ = [
    "AdaptationMethod",
    "Method",
    "MultimodalMethod",
    "ParameterReport",
    "available_methods",
    "count_parameters",
    "get_method",
    "register_method",
]
