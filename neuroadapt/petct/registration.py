"""PET-to-CT registration by Mattes mutual information (SimpleITK), rigid or affine.

Multi-resolution (shrink factors with Gaussian smoothing), regular-step gradient descent,
initialised by matching the centres of mass of the two body masks (CT above
``body_hu``; PET above ``pet_body_fraction`` of its 99.5th percentile, so that the bright
brain and tumour do not pull the PET centre away). The CT is the fixed image, smoothed by a
Gaussian of ``ct_smoothing_sigma_mm``; the PET is clamped at ``pet_clamp_fraction`` of its
99.5th percentile. Without the clamp, the blurred spill-out of the bright brain at the edge
of the field of view moved the mutual information optimum of the demo cohort 2-5 mm off
the truth along z; with it (and the smoothing) the error is 0.1-0.3 mm.

Convention (as the demo's ground truth): ``pet_to_ct`` is a 4x4 matrix in RAS mm with
``x_ct = pet_to_ct @ x_pet`` for the same anatomical point. The ITK transform ``itk``
maps CT physical (LPS) points to PET physical points, the direction ITK/ANTs resamplers
expect when they bring the PET onto the CT grid.

The benchmark (benchmarks/bench_petct_registration.py) compares this with ANTsPy; see the
report of issue 4 for the figures that justified the choice of SimpleITK.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.petct.images import lps_matrix

TRANSFORMS = ("rigid", "affine")


@dataclass(frozen=True)
class RegistrationSettings:
    """Settings of :func:`register` (the ``petct.registration`` config section).

    ``histogram_bins``: Mattes MI bins; ``sampling_fraction``: share of fixed-image voxels
    sampled per iteration (fixed ``seed``); ``learning_rate``/``min_step`` in the
    optimiser's scaled units (scales from a 1 mm physical shift); ``shrink_factors`` and
    ``smoothing_sigmas_mm`` one entry per pyramid level, coarse to fine.
    """

    transform: str = "rigid"
    histogram_bins: int = 50
    sampling_fraction: float = 0.25
    learning_rate: float = 2.0
    min_step: float = 1e-4
    iterations: int = 200
    relaxation: float = 0.5
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    seed: int = 20261123
    ct_smoothing_sigma_mm: float = 2.0
    pet_clamp_fraction: float = 0.1
    min_overlap: float = 0.5
    body_hu: float = -500.0
    pet_body_fraction: float = 0.02

    def check(self, where: str) -> None:
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"{where}.transform", f"unknown '{self.transform}'", "use rigid")
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise ConfigError(
                f"{where}.shrink_factors",
                "needs one smoothing sigma per pyramid level",
                "give e.g. shrink_factors: [4, 2, 1] and smoothing_sigmas_mm: [4, 2, 0]",
            )
        if not 0 < self.sampling_fraction <= 1:
            raise ConfigError(f"{where}.sampling_fraction", "must lie in (0, 1]", "use 0.25")


@dataclass(frozen=True)
class RegistrationResult:
    """``pet_to_ct`` (4x4, RAS mm; see the module docstring), the ITK transform (CT -> PET
    physical points), the final metric value (negative MI: lower is better), the optimiser's
    iterations at the last level and why it stopped, and the wall time (s)."""

    pet_to_ct: np.ndarray
    itk: sitk.Transform
    metric: float
    iterations: int
    stop_condition: str
    seconds: float


def itk_to_pet_to_ct(transform: sitk.Transform) -> np.ndarray:
    """4x4 RAS ``pet_to_ct`` of an ITK transform mapping CT -> PET (LPS), which must be
    affine (read off from where it sends the origin and the unit vectors)."""
    points = np.vstack([np.zeros(3), np.eye(3) * 100.0])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    matrix = np.eye(4)
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T / 100.0
    matrix[:3, 3] = mapped[0]
    return np.linalg.inv(lps_matrix(matrix))


def pet_to_ct_to_itk(pet_to_ct: np.ndarray) -> sitk.AffineTransform:
    """The ITK transform (CT -> PET physical points, LPS) of a RAS ``pet_to_ct`` matrix."""
    ct_to_pet = lps_matrix(np.linalg.inv(pet_to_ct))
    return sitk.AffineTransform(ct_to_pet[:3, :3].ravel().tolist(), ct_to_pet[:3, 3].tolist())


def initial_transform(
    ct: sitk.Image, pet: sitk.Image, settings: RegistrationSettings
) -> sitk.Transform:
    """Centres of mass of the CT and PET body masks matched, no rotation (CT -> PET, LPS)."""
    base = sitk.Euler3DTransform() if settings.transform == "rigid" else sitk.AffineTransform(3)
    ct_body = sitk.Cast(ct > settings.body_hu, sitk.sitkFloat32)
    level = float(np.percentile(sitk.GetArrayViewFromImage(pet), 99.5))
    pet_body = sitk.Cast(pet > settings.pet_body_fraction * level, sitk.sitkFloat32)
    return sitk.CenteredTransformInitializer(
        ct_body, pet_body, base, sitk.CenteredTransformInitializerFilter.MOMENTS
    )


def register(
    ct: sitk.Image,
    pet: sitk.Image,
    settings: RegistrationSettings = RegistrationSettings(),
    initial: sitk.Transform | None = None,
    threads: int = 1,
) -> RegistrationResult:
    """Register ``pet`` (moving; SUV or Bq/mL) to ``ct`` (fixed; HU), both float32.

    ``initial`` (CT -> PET, LPS) replaces the centre-of-mass start when given (tests use it
    to start from a known misalignment). Raises InputError when the images do not overlap
    after registration.
    """
    start = time.perf_counter()
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    pet = sitk.Cast(pet, sitk.sitkFloat32)
    if initial is None:
        initial = initial_transform(ct, pet, settings)
    if settings.ct_smoothing_sigma_mm > 0:
        ct = sitk.SmoothingRecursiveGaussian(ct, settings.ct_smoothing_sigma_mm)
    if settings.pet_clamp_fraction > 0:
        top = settings.pet_clamp_fraction * np.percentile(sitk.GetArrayViewFromImage(pet), 99.5)
        pet = sitk.Clamp(pet, lowerBound=-1e30, upperBound=float(top))
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(threads)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate,
        minStep=settings.min_step,
        numberOfIterations=settings.iterations,
        relaxationFactor=settings.relaxation,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        final = method.Execute(ct, pet)
    except RuntimeError as error:
        if "samples" in str(error).lower():
            problem = "CT and PET do not overlap (too few valid samples for mutual information)"
        else:
            problem = f"registration failed ({str(error).strip().splitlines()[-1]})"
        raise InputError(
            None,
            problem,
            "check that the PET and CT are of the same patient and session, and their "
            "affines (origins) in the NIfTI headers",
        ) from None
    overlap = overlap_fraction(ct, pet, final, settings.body_hu)
    if overlap < settings.min_overlap:
        raise InputError(
            None,
            f"too little overlap: after registration only {overlap:.0%} of the CT body lies in "
            f"the PET field of view (at least {settings.min_overlap:.0%} needed)",
            "check that the PET and CT are of the same patient and session and that their "
            "headers place them in the same scanner frame",
        )
    pet_to_ct = itk_to_pet_to_ct(final)
    return RegistrationResult(
        pet_to_ct=pet_to_ct,
        itk=final,
        metric=float(method.GetMetricValue()),
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=method.GetOptimizerStopConditionDescription(),
        seconds=time.perf_counter() - start,
    )


def overlap_fraction(
    ct: sitk.Image, pet: sitk.Image, transform: sitk.Transform, body_hu: float
) -> float:
    """Share of CT body voxels (HU above ``body_hu``) that ``transform`` (CT -> PET) sends
    inside the PET field of view (0 when the CT has no body voxels)."""
    ones = sitk.Image(pet.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(pet)
    inside = sitk.Resample(ones, ct, transform, sitk.sitkNearestNeighbor)
    body = sitk.GetArrayViewFromImage(ct) > body_hu
    if not body.any():
        return 0.0
    return float(sitk.GetArrayViewFromImage(inside)[body].mean())


def target_registration_error(
    estimate: np.ndarray, truth: np.ndarray, points_ct: np.ndarray
) -> np.ndarray:
    """Distance (mm) between where two ``pet_to_ct`` matrices send CT points (N, 3, RAS)
    into PET space: the error at each target point."""
    homogeneous = np.c_[points_ct, np.ones(len(points_ct))]
    a = homogeneous @ np.linalg.inv(estimate).T
    b = homogeneous @ np.linalg.inv(truth).T
    return np.linalg.norm(a[:, :3] - b[:, :3], axis=1)


def rotation_error_deg(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Angle (degrees) of the rotation between two rigid transforms' linear parts."""
    relative = np.asarray(estimate)[:3, :3] @ np.asarray(truth)[:3, :3].T
    cosine = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))
