"""Shared fixtures: small synthetic cohorts generated once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neuroadapt.demo import generate_cohort
from neuroadapt.demo.dwi import TINY

REPO = Path(__file__).resolve().parent.parent

# Small but complete: one site, four subjects (2 ADHD, 2 TD), full-size grid so the
# planted effect and the tissue model are realistic.
SMALL_DWI = {"kind": "dwi", "n_subjects": 4, "n_sites": 1}
# Tiny grids for tests that only need valid files quickly.
TINY_DWI = {"kind": "dwi", **TINY}
# Small PET/CT grids with the demo's field of view. No nodes, so the GTV is one blob and
# its PET and CT centroids can be compared directly.
SMALL_PETCT = {
    "n_subjects": 4,
    "ct_shape": (84, 84, 40),
    "ct_spacing_mm": (2.0, 2.0, 3.75),
    "pet_shape": (44, 44, 42),
    "node_probability": 0.0,
}


def make_cohort(root: Path, synthetic: dict, name: str = "cohort") -> tuple[Path, Path]:
    bids, truth = root / name, root / f"{name}_truth"
    generate_cohort(synthetic, bids, truth, where=f"test.{name}")
    return bids, truth


@pytest.fixture(scope="session")
def dwi_cohort(tmp_path_factory) -> tuple[Path, Path]:
    """(bids_dir, truth_dir) of SMALL_DWI; read-only: copy before changing it."""
    return make_cohort(tmp_path_factory.mktemp("dwi"), SMALL_DWI)


@pytest.fixture(scope="session")
def petct_cohort(tmp_path_factory) -> tuple[Path, Path]:
    """(bids_dir, truth_dir) of SMALL_PETCT; read-only."""
    return make_cohort(tmp_path_factory.mktemp("petct"), {"kind": "petct", **SMALL_PETCT})


@pytest.fixture(scope="session")
def tiny_dwi(tmp_path_factory) -> Path:
    bids, _ = make_cohort(tmp_path_factory.mktemp("tiny"), TINY_DWI)
    return bids


@pytest.fixture
def tiny_copy(tiny_dwi, tmp_path) -> Path:
    """A private copy of the tiny cohort that a test may break."""
    copy = tmp_path / "bids"
    shutil.copytree(tiny_dwi, copy)
    return copy


def dwi_output_paths(out: Path) -> dict[str, str]:
    """Every output of the dwi pipeline in ``out`` (the library's own helper)."""
    from neuroadapt.dwi.pipeline import outputs_in

    return outputs_in(out)
