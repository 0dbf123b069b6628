"""Registration of a subject's FA map to a template space for group-level outputs.

The template is the MNI152 ICBM 2009a nonlinear *symmetric* atlas that ships inside the
nilearn wheel (``nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz``,
1 mm, loaded and resampled with ``nilearn.datasets.load_mni152_wm_template`` /
``load_mni152_brain_mask``; no download). Its BIDS/TemplateFlow name is
``MNI152NLin2009aSym``: the file names and nilearn's download URL say ``nlin_sym_09a``
(nilearn's own description calls it "asymmetrical ... release a", which its files
contradict; fMRIPrep's default ``MNI152NLin2009cAsym`` is another release).

FA is bright in white matter and the template has no FA map, so FA (inside the subject's
brain mask) is registered to the template's white-matter probability map with mutual
information. On its own that pair is ambiguous for affine registration (an FA volume fits a
rotated, rescaled white-matter map almost as well), so the registration starts from the
brain outlines (dipy ``affine_registration``, all in one pipeline):

1. subject brain mask -> template brain mask: centre of mass, translation, rigid, then
   rigid + per-axis scaling (mutual information of the two masks);
2. FA -> white-matter probability: full affine (12 dof, mutual information), started from 1;
3. ``transform: syn`` only: dipy's ``SymmetricDiffeomorphicRegistration`` with a local
   cross-correlation metric (``CCMetric``), pre-aligned by 2.

Conventions: every transform maps template world points (RAS, mm) to the subject's DWI
world points -- the direction that resamples a DWI-space image onto the template grid (the
direction of an ITK/ANTs "image" transform). :attr:`Registration.coordinates` holds, for
every template voxel, the DWI world point it samples: the whole (composite) transform.
Written by hand: the ITK text/displacement-field writers (:func:`itk_affine_text`,
:func:`itk_displacement_image`) and the composition of dipy's displacement field with its
pre-alignment (:func:`_syn_coordinates`, dipy's own warping formula).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from neuroadapt.dwi.settings import TemplateSettings
from neuroadapt.errors import ConfigError, InputError

#: What each template space is, and the files of the nilearn wheel it comes from.
TEMPLATES = {
    "MNI152NLin2009aSym": {
        "Name": "ICBM 2009a Nonlinear Symmetric (MNI152)",
        "Files": (
            "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
            "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        ),
        "Images": {
            "white matter": "nilearn.datasets.load_mni152_wm_template (probability, max 1)",
            "brain mask": "nilearn.datasets.load_mni152_brain_mask (T1 template > 0.2)",
        },
        "Reference": "Fonov et al. 2009, 2011 (NeuroImage 47 S102; 54 313)",
    }
}
# Registration schedule: pyramid (iterations, shrink factor, smoothing sigma in voxels),
# coarse to fine; levels that would shrink the template below MIN_LEVEL_VOXELS along an
# axis are skipped (coarse templates register at fewer levels).
MASK_PIPELINE = ("center_of_mass", "translation", "rigid_isoscaling", "rigid_scaling")
MASK_LEVELS = ((50, 4, 3.0), (20, 2, 1.0), (10, 1, 0.0))
AFFINE_LEVELS = ((100, 4, 3.0), (50, 2, 1.0), (20, 1, 0.0))
MIN_LEVEL_VOXELS = 8
SAMPLING_PROPORTION = 0.3  # share of template voxels the mutual information samples
HISTOGRAM_BINS = 32
SYN_LEVEL_ITERS = (20, 10, 5)
SYN_CC_RADIUS_MM = 8.0  # window half-width of the local cross-correlation
# SyN's static image: white-matter probability plus this floor inside the brain mask, an
# FA-like template (FA is about 0.1-0.2 in grey matter and 0.4-0.7 in white matter): local
# cross-correlation would otherwise pull at the brain outline, an edge FA has and the
# white-matter map lacks.
SYN_BRAIN_FLOOR = 0.25
SEED = 20261124  # dipy draws the metric's sample points with np.random
# A 12-dof fit scaling an axis by less than a third or more than three times is a failure.
SCALE_LIMITS = (1 / 3, 3.0)
_FLIP_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's physical space)


class RegistrationError(InputError):
    """The template registration of one subject failed: names the subject's file."""


def check_available(settings: TemplateSettings, where: str = "dwi.template") -> None:
    """ConfigError at start-up when the template step is on but nilearn (which ships the
    template) cannot be imported or lacks the template files. Does not import nilearn."""
    if not settings.enabled:
        return
    fix = (
        "install nilearn 0.13 (pip install 'nilearn>=0.13,<0.14', as pyproject.toml pins it; "
        "the envs/dwi.yaml env has it, use --sdm conda), or set enabled: false"
    )
    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{where}.enabled",
            f"is true but nilearn, which ships the {settings.space} template, is not importable",
            fix,
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [f for f in TEMPLATES[settings.space]["Files"] if not (data / f).is_file()]
    if missing:
        raise ConfigError(
            f"{where}.enabled",
            f"is true but the nilearn install lacks {', '.join(missing)} in {data}",
            fix,
        )


@dataclass(frozen=True, eq=False)
class Template:
    """A template on a RAS grid at ``resolution_mm``: white-matter probability (X, Y, Z)
    in [0, 1] and brain mask (X, Y, Z) bool, voxel -> world (mm) ``affine``."""

    space: str
    resolution_mm: float
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    source: dict = field(default_factory=dict)


@lru_cache(maxsize=4)
def load_template(space: str, resolution_mm: float) -> Template:
    """The template ``space`` at ``resolution_mm`` from the nilearn wheel (no network)."""
    import nilearn
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_wm_template

    if space not in TEMPLATES:
        raise ConfigError("dwi.template.space", f"{space} is unknown", f"use {list(TEMPLATES)}")
    resolution = int(resolution_mm) if float(resolution_mm).is_integer() else resolution_mm
    wm_image = nib.as_closest_canonical(load_mni152_wm_template(resolution=resolution))
    brain_image = nib.as_closest_canonical(load_mni152_brain_mask(resolution=resolution))
    if wm_image.shape != brain_image.shape or not np.allclose(wm_image.affine, brain_image.affine):
        raise RuntimeError("nilearn's white-matter template and brain mask are on other grids")
    info = TEMPLATES[space]
    source = {
        "Name": space,
        "Description": info["Name"],
        "Source": f"nilearn {nilearn.__version__} wheel (nilearn/datasets/data/), no download",
        "Files": list(info["Files"]),
        "Images": dict(info["Images"]),
        "ResolutionMm": float(resolution_mm),
        "Reference": info["Reference"],
    }
    wm = np.clip(np.asarray(wm_image.dataobj, dtype=np.float32), 0.0, 1.0)
    brain = np.asarray(brain_image.dataobj) > 0
    return Template(space, float(resolution_mm), wm, brain, wm_image.affine.copy(), source)


@dataclass(frozen=True, eq=False)
class Registration:
    """One subject registered to ``template``.

    ``affine``: (4, 4) template world -> DWI world (RAS, mm), the affine part;
    ``coordinates``: (X, Y, Z, 3) on the template grid, the DWI world point (RAS, mm) each
    template voxel samples (the whole transform: equals ``affine`` applied to the voxel
    centres when ``transform`` is affine); ``mutual_information``: of the affine stage (FA vs
    white-matter probability, nats, dipy's estimate on its sample points);
    ``correlation``: Pearson r of the warped FA with the white-matter probability inside the
    template's brain mask (the quality figure in the sidecars); ``seconds``: wall time."""

    template: Template
    transform: str
    affine: np.ndarray
    coordinates: np.ndarray
    mutual_information: float
    correlation: float
    seconds: float

    def warp(
        self, image: np.ndarray, image_affine: np.ndarray, interpolation: str = "linear"
    ) -> np.ndarray:
        """``image`` (X, Y, Z) of the DWI grid ``image_affine`` on the template grid
        (float32; ``linear`` or ``nearest``; 0 outside the DWI field of view)."""
        from scipy.ndimage import map_coordinates

        order = {"linear": 1, "nearest": 0}[interpolation]
        inverse = np.linalg.inv(image_affine)
        voxels = self.coordinates @ inverse[:3, :3].T + inverse[:3, 3]
        warped = map_coordinates(
            np.asarray(image, dtype=np.float64),
            np.moveaxis(voxels, -1, 0),
            order=order,
            mode="constant",
            cval=0.0,
            prefilter=False,
        )
        return warped.astype(np.float32)

    @property
    def displacement(self) -> np.ndarray:
        """(X, Y, Z, 3) RAS mm: ``coordinates`` minus each template voxel's own position."""
        return self.coordinates - _voxel_world(self.template.wm.shape, self.template.affine)


def register(
    fa: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    template: Template,
    settings: TemplateSettings,
    source: str,
) -> Registration:
    """Register FA (X, Y, Z, in [0, 1]) inside the brain ``mask`` (X, Y, Z bool) of the DWI
    grid ``affine`` to ``template`` (see the module docstring for the stages).

    ``source``: the subject's file that errors name (its DWI series). Raises
    RegistrationError when the mask is empty, FA is not finite or flat in it, or the result
    is degenerate (a metric NaN, an axis scaled outside :data:`SCALE_LIMITS`)."""
    from dipy.align import affine_registration

    started = time.perf_counter()
    mask = np.asarray(mask) > 0
    fa = np.asarray(fa, dtype=np.float64)
    fix = (
        "check the subject's FA map and brain mask (figures/*_desc-tensor_dwimap.png), or "
        "set dwi.template.enabled: false"
    )
    if not mask.any():
        raise RegistrationError(source, "template registration: the brain mask is empty", fix)
    inside = fa[mask]
    if not np.isfinite(inside).all() or float(inside.max() - inside.min()) <= 0:
        raise RegistrationError(
            source, "template registration: FA is not finite or is constant in the mask", fix
        )
    moving = np.where(mask, np.clip(np.nan_to_num(fa), 0.0, 1.0), 0.0)
    common = {
        "moving_affine": affine,
        "static_affine": template.affine,
        "metric": "MI",
        "nbins": HISTOGRAM_BINS,
        "sampling_proportion": SAMPLING_PROPORTION,
    }
    np.random.seed(SEED)
    _, start = affine_registration(
        mask.astype(np.float64),
        template.brain.astype(np.float64),
        pipeline=list(MASK_PIPELINE),
        **_levels(MASK_LEVELS, template.wm.shape),
        **common,
    )
    _, matrix, _, value = affine_registration(
        moving,
        template.wm.astype(np.float64),
        pipeline=["affine"],
        starting_affine=start,
        ret_metric=True,
        **_levels(AFFINE_LEVELS, template.wm.shape),
        **common,
    )
    matrix = np.asarray(matrix, dtype=float)
    mutual_information = -float(value)
    scales = np.linalg.svd(matrix[:3, :3], compute_uv=False)
    if not np.isfinite(matrix).all() or not np.isfinite(mutual_information):
        raise RegistrationError(
            source, "template registration: the affine stage gave a NaN metric or matrix", fix
        )
    if scales.min() < SCALE_LIMITS[0] or scales.max() > SCALE_LIMITS[1]:
        raise RegistrationError(
            source,
            "template registration: the affine scales an axis by "
            f"{scales.min():.2f}-{scales.max():.2f} (outside {SCALE_LIMITS[0]:.2f}-"
            f"{SCALE_LIMITS[1]:.0f}), the registration failed",
            fix,
        )
    if settings.transform == "syn":
        coordinates = _syn(moving, affine, template, matrix)
    else:
        points = _voxel_world(template.wm.shape, template.affine)
        coordinates = points @ matrix[:3, :3].T + matrix[:3, 3]
    registration = Registration(
        template, settings.transform, matrix, coordinates, mutual_information, float("nan"), 0.0
    )
    warped = registration.warp(moving, affine)[template.brain]
    correlation = float(np.corrcoef(warped, template.wm[template.brain])[0, 1])
    if not np.isfinite(correlation) or not np.isfinite(coordinates).all():
        raise RegistrationError(
            source,
            "template registration: the warped FA is empty or flat in the template's brain "
            "(correlation with the white-matter map is NaN)",
            fix,
        )
    return Registration(
        template,
        settings.transform,
        matrix,
        coordinates,
        mutual_information,
        correlation,
        time.perf_counter() - started,
    )


def describe(registration: Registration) -> dict:
    """The registration for a JSON sidecar: template provenance, stages, metric values."""
    import dipy

    template = registration.template
    stages = [
        "brain mask to the template's brain mask: centre of mass, translation, rigid, rigid "
        "+ per-axis scaling (mutual information)",
        "FA in the brain mask to the template's white-matter probability: affine, 12 dof "
        "(mutual information)",
    ]
    metric = (
        f"mutual information (dipy, {HISTOGRAM_BINS} bins, {SAMPLING_PROPORTION:.0%} of the "
        "template's voxels sampled)"
    )
    if registration.transform == "syn":
        radius = max(2, int(round(SYN_CC_RADIUS_MM / template.resolution_mm)))
        stages.append(
            "SyN (dipy SymmetricDiffeomorphicRegistration) of FA to the white-matter "
            f"probability + {SYN_BRAIN_FLOOR:g} in the brain mask"
        )
        metric += f"; SyN: local cross-correlation (dipy CCMetric, radius {radius} voxels)"
    return {
        "Space": template.space,
        "Template": template.source,
        "Registration": {
            "Transform": registration.transform,
            "Stages": stages,
            "Metric": metric,
            "MutualInformation": round(registration.mutual_information, 6),
            "CorrelationWithTemplateWM": round(registration.correlation, 6),
            "Seconds": round(registration.seconds, 3),
            "Software": f"dipy {dipy.__version__}",
        },
    }


def _levels(levels, shape) -> dict:
    kept = [
        (iters, factor, sigma)
        for iters, factor, sigma in levels
        if min(shape) / factor >= MIN_LEVEL_VOXELS or factor == 1
    ]
    iters, factors, sigmas = (list(v) for v in zip(*kept, strict=True))
    return {"level_iters": iters, "factors": factors, "sigmas": sigmas}


def _voxel_world(shape, affine: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 3) world coordinates of the voxel centres."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _syn(moving, moving_affine, template: Template, prealign: np.ndarray) -> np.ndarray:
    """Coordinates (X, Y, Z, 3) of the affine + SyN transform (dipy, CC metric)."""
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    radius = max(2, int(round(SYN_CC_RADIUS_MM / template.resolution_mm)))
    # dipy's SyN pyramid halves the grid per level, coarsest first: as many levels as the
    # affine stage kept (a coarse template registers at fewer)
    kept = len(_levels(AFFINE_LEVELS, template.wm.shape)["level_iters"])
    levels = list(SYN_LEVEL_ITERS[-kept:])
    syn = SymmetricDiffeomorphicRegistration(CCMetric(3, radius=radius), level_iters=levels)
    mapping = syn.optimize(
        template.wm.astype(np.float64) + SYN_BRAIN_FLOOR * template.brain,
        moving,
        static_grid2world=template.affine,
        moving_grid2world=moving_affine,
        prealign=prealign,
    )
    return _syn_coordinates(mapping, template)


def _syn_coordinates(mapping, template: Template) -> np.ndarray:
    """World point each template voxel samples under a dipy DiffeomorphicMap (what its
    ``transform`` samples), from dipy's own warping formulas: with x the voxel's world point,
    P the pre-alignment and fields in world mm on their own grid, interpolated trilinearly
    (zero outside, as dipy does), y = P x + forward(P x) (``_warp_forward``), or, for the
    inverted map that ``SymmetricDiffeomorphicRegistration.optimize`` returns,
    y = P^-1 (x + backward(x)) (``_warp_backward``)."""
    from dipy.core.interpolation import interpolate_vector_3d

    def apply(matrix, xyz):
        return xyz @ matrix[:3, :3].T + matrix[:3, 3]

    def field(vectors, xyz):
        to_grid = mapping.disp_world2grid
        grid = xyz if to_grid is None else apply(to_grid, xyz)
        shift, _ = interpolate_vector_3d(np.ascontiguousarray(vectors, dtype=np.float64), grid)
        return np.asarray(shift)

    points = _voxel_world(template.wm.shape, template.affine).reshape(-1, 3)
    if mapping.is_inverse:
        inverse = np.eye(4) if mapping.prealign_inv is None else mapping.prealign_inv
        world = apply(inverse, points + field(mapping.backward, points))
    else:
        prealign = np.eye(4) if mapping.prealign is None else mapping.prealign
        aligned = apply(prealign, points)
        world = aligned + field(mapping.forward, aligned)
    return world.reshape(*template.wm.shape, 3)


def itk_affine_text(matrix: np.ndarray) -> str:
    """An ITK text transform file (``AffineTransform_double_3_3``, LPS physical space, as
    ANTs/ITK/SimpleITK read it) of ``matrix`` (template world -> DWI world, RAS mm)."""
    lps = _FLIP_LPS @ np.asarray(matrix, dtype=float) @ _FLIP_LPS
    values = [*lps[:3, :3].ravel(), *lps[:3, 3]]
    return (
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(f'{v:.10g}' for v in values)}\nFixedParameters: 0 0 0\n"
    )


def read_itk_affine(path: str | Path) -> np.ndarray:
    """The RAS 4x4 matrix of an :func:`itk_affine_text` file (centre 0 0 0)."""
    lines = {
        key.strip(): value.split()
        for key, _, value in (line.partition(":") for line in Path(path).read_text().splitlines())
    }
    values = np.array(lines["Parameters"], dtype=float)
    if np.any(np.array(lines.get("FixedParameters", ["0", "0", "0"]), dtype=float)):
        raise ValueError(f"{path}: a transform with a centre is not supported")
    lps = np.eye(4)
    lps[:3, :3] = values[:9].reshape(3, 3)
    lps[:3, 3] = values[9:12]
    return _FLIP_LPS @ lps @ _FLIP_LPS


def itk_displacement_image(registration: Registration) -> nib.Nifti1Image:
    """The whole transform as an ITK displacement field: (X, Y, Z, 1, 3) on the template
    grid, vector intent, displacements in LPS mm (template point p maps to p + u(p), as ITK's
    ``DisplacementFieldTransform`` and antsApplyTransforms read a NIfTI warp)."""
    displacement = registration.displacement.astype(np.float32)
    displacement[..., :2] *= -1.0  # RAS -> LPS components
    image = nib.Nifti1Image(displacement[:, :, :, None, :], registration.template.affine)
    image.header.set_intent("vector", (), "")
    image.header.set_xyzt_units("mm", "sec")
    return image
