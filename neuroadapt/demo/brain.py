"""An analytic brain phantom for the synthetic diffusion cohort.

The brain is described by simple shapes in a head-centred frame (mm, RAS, origin at the
centre of the brain), so it can be sampled exactly at any point: on any image grid and in
any head pose, which is how head motion and the T1w/DWI offset are simulated without
interpolating images.

Tissues: an ellipsoidal brain with a grey-matter cortex shell, deep grey matter (thalami),
lateral ventricles and a thin CSF rim outside the brain; white matter inside. Named
white-matter tracts carry a coherent fibre orientation:

========================  ===================================  ================
region                    shape                                fibre direction
========================  ===================================  ================
corpus_callosum           flat ellipsoid above the ventricles  left-right (x)
cst_left / cst_right      vertical cylinders                   inferior-superior (z)
slf_left / slf_right      antero-posterior cylinders, lateral  antero-posterior (y)
cingulum_left / _right    antero-posterior cylinders, medial   antero-posterior (y)
========================  ===================================  ================

Elsewhere, white matter fibres run radially (corona-radiata-like) with lower coherence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER = 0, 1, 2, 3
TISSUE_NAMES = {BACKGROUND: "background", CSF: "csf", GREY_MATTER: "gm", WHITE_MATTER: "wm"}

# Order matters: where shapes overlap, the earlier region wins.
REGIONS = (
    "corpus_callosum",
    "cst_left",
    "cst_right",
    "slf_left",
    "slf_right",
    "cingulum_left",
    "cingulum_right",
)

_CORTEX_INNER = 0.82  # normalised ellipsoid radius where cortex starts
_CSF_RIM_OUTER = 1.06  # normalised radius of the outer CSF (subarachnoid) rim


@dataclass(frozen=True)
class BrainAnatomy:
    """One subject's brain geometry (all lengths in mm, head frame)."""

    radii_mm: tuple[float, float, float]
    ventricle_scale: float
    tract_shift_mm: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator, age_years: float) -> BrainAnatomy:
        """Draw a plausible child/adolescent brain: larger with age, ventricles vary."""
        growth = 1.0 + 0.01 * (age_years - 12.0)
        scale = growth * rng.normal(1.0, 0.03)
        base = np.array([60.0, 75.0, 56.0])
        return cls(
            radii_mm=tuple(float(v) for v in base * scale),
            ventricle_scale=float(np.clip(rng.normal(1.0, 0.15), 0.6, 1.5)),
            tract_shift_mm=tuple(float(v) for v in rng.normal(0.0, 1.0, size=3)),
        )


@dataclass(frozen=True)
class PhantomSample:
    """Phantom evaluated at N points.

    tissue: (N,) int8 tissue code; region: (N,) int8, 0 outside any tract, else 1 +
    index into :data:`REGIONS`; fibre: (N, 3) unit fibre direction in the head frame.
    """

    tissue: np.ndarray
    region: np.ndarray
    fibre: np.ndarray


def _inside_ellipsoid(points: np.ndarray, centre, radii) -> np.ndarray:
    x = (points[:, 0] - centre[0]) / radii[0]
    y = (points[:, 1] - centre[1]) / radii[1]
    z = (points[:, 2] - centre[2]) / radii[2]
    return x * x + y * y + z * z <= 1.0


def _inside_cylinder(points: np.ndarray, axis: int, centre, radius: float, extent) -> np.ndarray:
    """Cylinder along coordinate ``axis`` through ``centre`` (3-vector), ``extent`` = (lo, hi)."""
    u, v = (a for a in range(3) if a != axis)
    du = points[:, u] - centre[u]
    dv = points[:, v] - centre[v]
    along = points[:, axis]
    return (du * du + dv * dv <= radius**2) & (along >= extent[0]) & (along <= extent[1])


def _region_masks(anatomy: BrainAnatomy, points: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the named tracts, positions scaled with the brain size."""
    a, b, c = anatomy.radii_mm
    s = np.array([a / 60.0, b / 75.0, c / 56.0])
    shift = np.asarray(anatomy.tract_shift_mm)

    def at(x, y, z):
        return np.array([x, y, z]) * s + shift

    return {
        "corpus_callosum": _inside_ellipsoid(points, at(0, 0, 17), np.array([36, 34, 5]) * s),
        "cst_left": _inside_cylinder(points, 2, at(-22, -8, 0), 6.0, (-44 * s[2], 32 * s[2])),
        "cst_right": _inside_cylinder(points, 2, at(22, -8, 0), 6.0, (-44 * s[2], 32 * s[2])),
        "slf_left": _inside_cylinder(points, 1, at(-34, 0, 20), 6.0, (-45 * s[1], 30 * s[1])),
        "slf_right": _inside_cylinder(points, 1, at(34, 0, 20), 6.0, (-45 * s[1], 30 * s[1])),
        "cingulum_left": _inside_cylinder(points, 1, at(-7, 0, 27), 4.0, (-40 * s[1], 35 * s[1])),
        "cingulum_right": _inside_cylinder(points, 1, at(7, 0, 27), 4.0, (-40 * s[1], 35 * s[1])),
    }


_REGION_AXIS = {"corpus": 0, "cst": 2, "slf": 1, "cingulum": 1}


def evaluate(anatomy: BrainAnatomy, points: np.ndarray) -> PhantomSample:
    """Evaluate the phantom at ``points`` (N, 3), head-frame mm."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    tissue = np.full(n, BACKGROUND, dtype=np.int8)
    region = np.zeros(n, dtype=np.int8)
    fibre = np.zeros((n, 3))
    fibre[:, 2] = 1.0

    radii = np.asarray(anatomy.radii_mm)
    # Only points inside the outer CSF rim need the detailed (costlier) tests.
    r2 = (
        (points[:, 0] / radii[0]) ** 2
        + (points[:, 1] / radii[1]) ** 2
        + (points[:, 2] / radii[2]) ** 2
    )
    head = np.flatnonzero(r2 <= _CSF_RIM_OUTER**2)
    p = points[head]
    r2 = r2[head]
    t = np.full(len(head), CSF, dtype=np.int8)
    t[r2 <= 1.0] = GREY_MATTER
    t[r2 <= _CORTEX_INNER**2] = WHITE_MATTER
    s = radii / np.array([60.0, 75.0, 56.0])
    vs = anatomy.ventricle_scale
    for side in (-1, 1):
        thalamus = _inside_ellipsoid(p, np.array([12 * side, -8, -2]) * s, np.array([9, 11, 9]) * s)
        t[thalamus] = GREY_MATTER
        ventricle = _inside_ellipsoid(
            p, np.array([9 * side, 0, 5]) * s, np.array([4.5 * vs, 22, 8 * vs]) * s
        )
        t[ventricle] = CSF
    tissue[head] = t

    # Generic white matter and cortex: radial fibres (corona-radiata-like).
    norm = np.sqrt(np.einsum("ij,ij->i", p, p))[:, None]
    f = np.where(norm > 1e-6, p / np.maximum(norm, 1e-6), np.array([0.0, 0.0, 1.0]))

    wm = np.flatnonzero(t == WHITE_MATTER)
    reg = np.zeros(len(head), dtype=np.int8)
    masks = _region_masks(anatomy, p[wm])
    # reversed so that earlier regions in REGIONS overwrite later ones where they overlap
    for index, name in reversed(list(enumerate(REGIONS))):
        inside = wm[masks[name]]
        reg[inside] = index + 1
        direction = np.zeros(3)
        direction[_REGION_AXIS[name.split("_")[0]]] = 1.0
        f[inside] = direction
    region[head] = reg
    fibre[head] = f
    return PhantomSample(tissue=tissue, region=region, fibre=fibre)


def region_index(name: str) -> int:
    """Code of a named region in :attr:`PhantomSample.region`."""
    return REGIONS.index(name) + 1
