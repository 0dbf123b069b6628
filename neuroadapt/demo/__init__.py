"""Embedded synthetic cohorts: deterministic, valid BIDS, with ground truth kept apart.

Each generator is registered by the ``kind`` a config names under
``datasets.<name>.synthetic``; its parameters are a frozen dataclass (the "spec").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from neuroadapt.io import atomic_directory
from neuroadapt.spec import spec_from_mapping

# kind -> (module, spec dataclass, generator function); imported on first use.
_GENERATORS = {
    "dwi": ("neuroadapt.demo.dwi", "DwiCohortSpec", "generate_dwi_cohort"),
    "petct": ("neuroadapt.demo.petct", "PetCtCohortSpec", "generate_petct_cohort"),
    "ct_pretrain": (
        "neuroadapt.demo.ct_pretrain",
        "CtPretrainCohortSpec",
        "generate_ct_pretrain_cohort",
    ),
}


def _generator(kind: str) -> tuple[type, Callable]:
    module_name, spec_name, function_name = _GENERATORS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, spec_name), getattr(module, function_name)


def parse_spec(synthetic: Mapping[str, Any], where: str):
    """The spec dataclass for a config's ``synthetic: {kind: ..., **params}`` mapping."""
    params = dict(synthetic)
    kind = params.pop("kind")
    spec_cls, _ = _generator(kind)
    return spec_from_mapping(spec_cls, params, where)


def generate_cohort(
    synthetic: Mapping[str, Any], bids_dir: Path, truth_dir: Path, where: str
) -> None:
    """Generate a synthetic dataset into ``bids_dir`` and its ground truth into
    ``truth_dir``; both appear only when generation succeeded."""
    spec = parse_spec(synthetic, where)
    _, generate = _generator(synthetic["kind"])
    with atomic_directory(truth_dir) as truth_staging, atomic_directory(bids_dir) as bids_staging:
        generate(spec, bids_staging, truth_staging)
