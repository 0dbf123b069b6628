"""The ``dwi`` config section as frozen dataclasses (defaults = the schema's defaults)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from neuroadapt.errors import ConfigError
from neuroadapt.spec import spec_from_mapping


@dataclass(frozen=True)
class DenoiseSettings:
    """``method``: mppca (QSIPrep's default), patch2self or none. ``patch_radius``: MP-PCA
    patch radius in voxels (2 = 5x5x5 patches, as QSIPrep/dwidenoise use)."""

    method: str = "mppca"
    patch_radius: int = 2
    backend: str = "dipy"

    def check(self, where: str) -> None:
        if self.backend == "mrtrix3" and self.method != "mppca":
            raise ConfigError(
                f"{where}.method",
                f"{self.method} is not available with the mrtrix3 backend (dwidenoise is MP-PCA)",
                "use method: mppca, or backend: dipy",
            )


@dataclass(frozen=True)
class UnringSettings:
    """Gibbs unringing (Kellner et al. 2016): off by default, as in QSIPrep."""

    enabled: bool = False
    backend: str = "dipy"


@dataclass(frozen=True)
class BiasSettings:
    """B1 bias-field correction (N4 on the mean b0, SimpleITK): on by default, as QSIPrep's
    ``--b1-biascorrect-stage final``; ``shrink_factor``: N4 runs on the image shrunk by it."""

    enabled: bool = True
    shrink_factor: int = 2


@dataclass(frozen=True)
class MotionSettings:
    """Rigid head-motion correction of every volume to the b0 reference (dipy).

    ``iterations``: rounds of (tensor fit -> predict each volume -> register the volume to
    its prediction -> anchor the diffusion-weighted volumes' common frame to the b0s);
    ``anchor_to_b0s``: that last step (see :mod:`neuroadapt.dwi.motion`);
    ``sampling_proportion``: share of voxels the mutual-information metric samples for the
    diffusion-weighted volumes (null: all voxels; b0 volumes always use all);
    ``level_iters``/``factors``/``sigmas``: the pyramid;
    ``gtol``: the optimiser's gradient tolerance (dipy's ``motion_correction`` default is
    far looser, see ../shared/facts.md)."""

    enabled: bool = True
    iterations: int = 2
    anchor_to_b0s: bool = True
    sampling_proportion: float | None = 0.3
    level_iters: tuple[int, ...] = (100, 50, 10)
    factors: tuple[int, ...] = (4, 2, 1)
    sigmas: tuple[float, ...] = (3.0, 1.0, 0.0)
    gtol: float = 1e-6
    seed: int = 20261122

    def check(self, where: str) -> None:
        if not len(self.level_iters) == len(self.factors) == len(self.sigmas):
            raise ConfigError(
                f"{where}.level_iters",
                "level_iters, factors and sigmas must have one entry per pyramid level",
                "give the three lists the same length, e.g. [100, 50, 10], [4, 2, 1], [3, 1, 0]",
            )


@dataclass(frozen=True)
class MaskSettings:
    """dipy ``median_otsu`` parameters."""

    median_radius: int = 2
    numpass: int = 1
    backend: str = "dipy"


@dataclass(frozen=True)
class TensorSettings:
    """Tensor fit on volumes with b <= ``max_bval`` (s/mm^2); ``fit_method``: WLS/OLS/NLLS."""

    fit_method: str = "WLS"
    max_bval: float = 1200.0
    backend: str = "dipy"

    def check(self, where: str) -> None:
        if self.backend == "mrtrix3" and self.fit_method not in ("WLS", "OLS"):
            raise ConfigError(
                f"{where}.fit_method",
                f"{self.fit_method} is not available with the mrtrix3 backend",
                "use WLS or OLS, or backend: dipy",
            )


@dataclass(frozen=True)
class QcSettings:
    """Thresholds of the image-QC outlier flags."""

    max_mean_fd_mm: float = 0.5
    max_fd_mm: float = 2.0
    min_b0_snr: float = 10.0
    max_nonphysical_fraction: float = 0.01


@dataclass(frozen=True)
class ModelReadySettings:
    """FA/MD cropped to the brain, resampled to ``shape``: MD is divided by ``md_scale``
    (mm^2/s, free water at body temperature) and clipped to [0, 1]."""

    shape: tuple[int, int, int] = (32, 32, 32)
    margin_mm: float = 4.0
    md_scale: float = 3.0e-3
    # dwi: the box over the subject's brain mask in its own DWI space; template: the box
    # over the template's brain mask, from the template-space FA/MD (dwi.template on)
    space: str = "dwi"


#: The template spaces :mod:`neuroadapt.dwi.template` can register to (the nilearn wheel's).
TEMPLATE_SPACES = ("MNI152NLin2009aSym",)


@dataclass(frozen=True)
class TemplateSettings:
    """Registration of FA to a template for group-level outputs (off by default).

    ``space``: the template (BIDS/TemplateFlow name); ``resolution_mm``: its grid, the
    grid of the template-space maps; ``transform``: affine (12 dof, mutual information) or
    syn (affine, then dipy's symmetric diffeomorphic registration, cross-correlation)."""

    enabled: bool = False
    space: str = "MNI152NLin2009aSym"
    resolution_mm: float = 2.0
    transform: str = "affine"

    def check(self, where: str) -> None:
        if self.space not in TEMPLATE_SPACES:
            raise ConfigError(
                f"{where}.space",
                f"{self.space} is not a template shipped with the pipeline",
                f"use one of: {', '.join(TEMPLATE_SPACES)}",
            )
        if self.transform not in ("affine", "syn"):
            raise ConfigError(
                f"{where}.transform", f"{self.transform!r} is not allowed", "use affine or syn"
            )
        if not self.resolution_mm > 0:
            raise ConfigError(f"{where}.resolution_mm", "must be positive", "give mm > 0, e.g. 2")


@dataclass(frozen=True)
class DwiSettings:
    b0_threshold: float = 50.0
    denoise: DenoiseSettings = field(default_factory=DenoiseSettings)
    unring: UnringSettings = field(default_factory=UnringSettings)
    bias: BiasSettings = field(default_factory=BiasSettings)
    motion: MotionSettings = field(default_factory=MotionSettings)
    mask: MaskSettings = field(default_factory=MaskSettings)
    tensor: TensorSettings = field(default_factory=TensorSettings)
    qc: QcSettings = field(default_factory=QcSettings)
    model_ready: ModelReadySettings = field(default_factory=ModelReadySettings)
    template: TemplateSettings = field(default_factory=TemplateSettings)


_SECTIONS = {
    "denoise": DenoiseSettings,
    "unring": UnringSettings,
    "bias": BiasSettings,
    "motion": MotionSettings,
    "mask": MaskSettings,
    "tensor": TensorSettings,
    "qc": QcSettings,
    "model_ready": ModelReadySettings,
    "template": TemplateSettings,
}


def settings_from_config(section: Mapping | None) -> DwiSettings:
    """DwiSettings from the (schema-validated) ``dwi`` config section."""
    section = dict(section or {})
    values = {
        name: spec_from_mapping(cls, section.get(name), f"dwi.{name}")
        for name, cls in _SECTIONS.items()
    }
    if "b0_threshold" in section:
        values["b0_threshold"] = float(section["b0_threshold"])
    if values["model_ready"].space not in ("dwi", "template"):
        raise ConfigError(
            "dwi.model_ready.space",
            f"{values['model_ready'].space!r} is not allowed",
            "use dwi or template",
        )
    if values["model_ready"].space == "template" and not values["template"].enabled:
        raise ConfigError(
            "dwi.model_ready.space",
            "is template but the template registration is off",
            "set dwi.template.enabled: true, or model_ready.space: dwi",
        )
    return DwiSettings(**values)


def backends(settings: DwiSettings) -> dict[str, str]:
    """The backend of each switchable step that runs: {step: dipy | mrtrix3}."""
    chosen = {"mask": settings.mask.backend, "tensor": settings.tensor.backend}
    if settings.denoise.method != "none":
        chosen["denoise"] = settings.denoise.backend
    if settings.unring.enabled:
        chosen["unring"] = settings.unring.backend
    return chosen
