"""The per-subject steps as a nipype workflow of small interfaces (as QSIPrep composes its
steps), so every step's inputs, outputs and parameters are recorded in the node's folder
of the work directory (``_report/report.rst``, ``_inputs.pklz``, ``result_*.pklz``).

Nodes exchange files: a 4D NIfTI (RAS, uncompressed) with FSL .bval/.bvec beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no network version check at run time

from nipype.interfaces.base import (  # noqa: E402
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)
from nipype.pipeline import engine as pe  # noqa: E402

from neuroadapt.dwi import bias, denoise, gradients, mask, motion, mrtrix, tensor  # noqa: E402
from neuroadapt.dwi.settings import (  # noqa: E402
    DenoiseSettings,
    DwiSettings,
    MaskSettings,
    MotionSettings,
    TensorSettings,
)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, dtype=np.float32) -> str:
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
    return str(Path(path).resolve())


def save_gradients(bvals, bvecs_voxel, affine, stem: str | Path) -> tuple[str, str]:
    """FSL .bval/.bvec of a series with ``affine``; returns their absolute paths."""
    stem = Path(stem).resolve()
    bval, bvec = f"{stem}.bval", f"{stem}.bvec"
    Path(bval).write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    fsl = gradients.voxel_to_fsl(bvecs_voxel, affine)
    Path(bvec).write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in fsl) + "\n")
    return bval, bvec


def read_series(dwi_file: str, bval_file: str, bvec_file: str) -> gradients.DwiSeries:
    """A series written by a node (already checked: no validation)."""
    image = nib.load(dwi_file)
    bvals = np.loadtxt(bval_file, ndmin=1)
    vectors = gradients.fsl_to_voxel(np.loadtxt(bvec_file, ndmin=2), image.affine)
    return gradients.DwiSeries(
        np.asarray(image.dataobj, dtype=np.float32), image.affine, bvals, vectors
    )


class _SeriesInput(BaseInterfaceInputSpec):
    dwi_file = File(exists=True, mandatory=True, desc="4D DWI series")
    bval_file = File(exists=True, mandatory=True, desc="FSL b-values")
    bvec_file = File(exists=True, mandatory=True, desc="FSL b-vectors")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-value (s/mm^2) counted as b=0")


class _SeriesOutput(TraitedSpec):
    dwi_file = File(exists=True)
    bval_file = File(exists=True)
    bvec_file = File(exists=True)


class _ConformOutput(_SeriesOutput):
    head_mask_file = File(exists=True, desc="dilated brain mask of the mean b0 (RAS)")


class _ConformInput(_SeriesInput):
    median_radius = traits.Int(2, usedefault=True)
    numpass = traits.Int(1, usedefault=True)


class Conform(SimpleInterface):
    """Load and check the series, reorient it to RAS with the b-vectors; rough head mask."""

    input_spec = _ConformInput
    output_spec = _ConformOutput

    def _run_interface(self, runtime):
        i = self.inputs
        series = gradients.to_ras(
            gradients.load_dwi(i.dwi_file, i.bval_file, i.bvec_file, i.b0_threshold)
        )
        cwd = Path(runtime.cwd)
        self._results["dwi_file"] = save_nifti(series.data, series.affine, cwd / "dwi.nii")
        self._results["bval_file"], self._results["bvec_file"] = save_gradients(
            series.bvals, series.bvecs_voxel, series.affine, cwd / "dwi"
        )
        b0 = mask.b0_reference(series.data, series.b0_mask(i.b0_threshold))
        head = mask.head_mask(b0, MaskSettings(i.median_radius, i.numpass))
        self._results["head_mask_file"] = save_nifti(
            head, series.affine, cwd / "head_mask.nii", np.uint8
        )
        return runtime


class _DenoiseInput(_SeriesInput):
    mask_file = File(exists=True, mandatory=True, desc="where to denoise")
    method = traits.Enum(*denoise.METHODS, usedefault=True)
    patch_radius = traits.Int(2, usedefault=True)
    backend = traits.Enum(*mrtrix.BACKENDS, usedefault=True, desc="dipy or mrtrix3 (dwidenoise)")


class _DenoiseOutput(TraitedSpec):
    dwi_file = File(exists=True)
    noise_sigma = traits.Either(None, traits.Float, desc="median MP-PCA noise sigma")


class Denoise(SimpleInterface):
    """MP-PCA or patch2self denoising (dipy), or MP-PCA by MRtrix3's dwidenoise."""

    input_spec = _DenoiseInput
    output_spec = _DenoiseOutput

    def _run_interface(self, runtime):
        i = self.inputs
        image = nib.load(i.dwi_file)
        bvals = np.loadtxt(i.bval_file, ndmin=1)
        head = np.asarray(nib.load(i.mask_file).dataobj) > 0
        if i.backend == "mrtrix3":
            data, sigma = mrtrix.denoise(i.dwi_file, i.mask_file, i.patch_radius, Path(runtime.cwd))
        else:
            data, sigma = denoise.denoise(
                np.asarray(image.dataobj, dtype=np.float32),
                bvals,
                DenoiseSettings(i.method, i.patch_radius),
                head,
            )
        self._results["dwi_file"] = save_nifti(data, image.affine, Path(runtime.cwd) / "dwi.nii")
        self._results["noise_sigma"] = sigma
        return runtime


class _UnringInput(BaseInterfaceInputSpec):
    dwi_file = File(exists=True, mandatory=True)
    slice_axis = traits.Int(2, usedefault=True, desc="axis across slices (RAS: 2 = axial)")
    backend = traits.Enum(*mrtrix.BACKENDS, usedefault=True, desc="dipy or mrtrix3 (mrdegibbs)")


class _UnringOutput(TraitedSpec):
    dwi_file = File(exists=True)


class Unring(SimpleInterface):
    """Gibbs unringing in the axial plane (dipy gibbs_removal or MRtrix3 mrdegibbs)."""

    input_spec = _UnringInput
    output_spec = _UnringOutput

    def _run_interface(self, runtime):
        image = nib.load(self.inputs.dwi_file)
        if self.inputs.backend == "mrtrix3":
            data = mrtrix.unring(self.inputs.dwi_file, Path(runtime.cwd))
        else:
            data = denoise.unring(
                np.asarray(image.dataobj, dtype=np.float32), self.inputs.slice_axis
            )
        self._results["dwi_file"] = save_nifti(data, image.affine, Path(runtime.cwd) / "dwi.nii")
        return runtime


class _BiasInput(_SeriesInput):
    mask_file = File(exists=True, mandatory=True, desc="head mask N4 works in")
    shrink_factor = traits.Int(2, usedefault=True)


class _BiasOutput(TraitedSpec):
    dwi_file = File(exists=True)
    field_file = File(exists=True, desc="the multiplicative bias field, mean 1 in the mask")


class BiasCorrect(SimpleInterface):
    """B1 bias-field correction: N4 on the mean b0, every volume divided by the field."""

    input_spec = _BiasInput
    output_spec = _BiasOutput

    def _run_interface(self, runtime):
        i = self.inputs
        series = read_series(i.dwi_file, i.bval_file, i.bvec_file)
        head = np.asarray(nib.load(i.mask_file).dataobj) > 0
        b0 = mask.b0_reference(series.data, series.b0_mask(i.b0_threshold))
        spacing = nib.affines.voxel_sizes(series.affine)
        field = bias.n4_field(b0, head, spacing, i.shrink_factor)
        cwd = Path(runtime.cwd)
        self._results["dwi_file"] = save_nifti(
            bias.correct(series.data, field), series.affine, cwd / "dwi.nii"
        )
        self._results["field_file"] = save_nifti(field, series.affine, cwd / "field.nii")
        return runtime


class _MotionInput(_SeriesInput):
    mask_file = File(exists=True, mandatory=True, desc="head mask for the model fit")
    settings = traits.Dict(desc="MotionSettings fields")


class _MotionOutput(_SeriesOutput):
    transforms_file = File(exists=True, desc="(N, 4, 4) reference world -> volume world")


class MotionCorrect(SimpleInterface):
    """Rigid head-motion correction of every volume with b-vector rotation (dipy)."""

    input_spec = _MotionInput
    output_spec = _MotionOutput

    def _run_interface(self, runtime):
        i = self.inputs
        series = read_series(i.dwi_file, i.bval_file, i.bvec_file)
        head = np.asarray(nib.load(i.mask_file).dataobj) > 0
        result = motion.correct_motion(
            series.data,
            series.affine,
            series.bvals,
            series.bvecs_voxel,
            head,
            MotionSettings(**i.settings),
            i.b0_threshold,
        )
        cwd = Path(runtime.cwd)
        self._results["dwi_file"] = save_nifti(result.data, series.affine, cwd / "dwi.nii")
        self._results["bval_file"], self._results["bvec_file"] = save_gradients(
            series.bvals, result.bvecs_voxel, series.affine, cwd / "dwi"
        )
        np.save(cwd / "transforms.npy", result.transforms)
        self._results["transforms_file"] = str((cwd / "transforms.npy").resolve())
        return runtime


class _MaskInput(_SeriesInput):
    median_radius = traits.Int(2, usedefault=True)
    numpass = traits.Int(1, usedefault=True)
    given_mask_file = File(
        exists=True, desc="a brain mask made upstream (QSIPrep), used instead of computing one"
    )
    backend = traits.Enum(*mrtrix.BACKENDS, usedefault=True, desc="dipy or mrtrix3 (dwi2mask)")


class _MaskOutput(TraitedSpec):
    b0_file = File(exists=True, desc="mean b0 reference")
    mask_file = File(exists=True, desc="brain mask (median_otsu)")


class BrainMask(SimpleInterface):
    """b0 reference (mean of the b=0 volumes) and brain mask (dipy median_otsu or MRtrix3
    dwi2mask)."""

    input_spec = _MaskInput
    output_spec = _MaskOutput

    def _run_interface(self, runtime):
        i = self.inputs
        series = read_series(i.dwi_file, i.bval_file, i.bvec_file)
        b0 = mask.b0_reference(series.data, series.b0_mask(i.b0_threshold))
        cwd = Path(runtime.cwd)
        if isdefined(i.given_mask_file):
            brain = mask.conform_mask(i.given_mask_file, series.data.shape[:3], series.affine)
        elif i.backend == "mrtrix3":
            brain = mrtrix.brain_mask(i.dwi_file, i.bval_file, i.bvec_file, cwd)
        else:
            brain = mask.brain_mask(b0, MaskSettings(i.median_radius, i.numpass))
        self._results["b0_file"] = save_nifti(b0, series.affine, cwd / "b0.nii")
        self._results["mask_file"] = save_nifti(brain, series.affine, cwd / "mask.nii", np.uint8)
        return runtime


class _TensorInput(_SeriesInput):
    mask_file = File(exists=True, mandatory=True)
    fit_method = traits.Enum(*tensor.FIT_METHODS, usedefault=True)
    max_bval = traits.Float(1200.0, usedefault=True, desc="largest b-value (s/mm^2) fitted")
    backend = traits.Enum(
        *mrtrix.BACKENDS, usedefault=True, desc="dipy or mrtrix3 (dwi2tensor + tensor2metric)"
    )


class _TensorOutput(TraitedSpec):
    fa_file = File(exists=True)
    md_file = File(exists=True)
    ad_file = File(exists=True)
    rd_file = File(exists=True)
    rgb_file = File(exists=True)
    nonphysical = traits.Int(desc="mask voxels with a negative eigenvalue")
    volumes_used = traits.List(traits.Int)


class FitTensor(SimpleInterface):
    """Diffusion tensor fit (dipy, or MRtrix3 dwi2tensor + tensor2metric) on the
    b <= max_bval volumes: FA, MD, AD, RD, colour FA."""

    input_spec = _TensorInput
    output_spec = _TensorOutput

    def _run_interface(self, runtime):
        i = self.inputs
        series = read_series(i.dwi_file, i.bval_file, i.bvec_file)
        brain = np.asarray(nib.load(i.mask_file).dataobj) > 0
        cwd = Path(runtime.cwd)
        if i.backend == "mrtrix3":
            keep = tensor.shell_volumes(series.bvals, i.max_bval, source=i.dwi_file)
            shell = save_nifti(series.data[..., keep], series.affine, cwd / "shell.nii")
            bval, bvec = save_gradients(
                series.bvals[keep], series.bvecs_voxel[keep], series.affine, cwd / "shell"
            )
            raw = mrtrix.fit_tensor(shell, bval, bvec, i.mask_file, i.fit_method, cwd)
            maps = tensor.maps_from_mrtrix(raw, brain, keep)
        else:
            maps = tensor.fit_tensor(
                series.data,
                series.bvals,
                series.bvecs_voxel,
                brain,
                TensorSettings(i.fit_method, i.max_bval),
                i.b0_threshold,
            )
        for name in ("fa", "md", "ad", "rd", "rgb"):
            self._results[f"{name}_file"] = save_nifti(
                getattr(maps, name), series.affine, cwd / f"{name}.nii"
            )
        self._results["nonphysical"] = maps.nonphysical
        self._results["volumes_used"] = maps.volumes_used.tolist()
        return runtime


class _TemplateInput(BaseInterfaceInputSpec):
    fa_file = File(exists=True, mandatory=True)
    md_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True, desc="brain mask of the DWI grid")
    source = traits.Str(mandatory=True, desc="the subject's DWI series, named by errors")
    space = traits.Str("MNI152NLin2009aSym", usedefault=True)
    resolution_mm = traits.Float(2.0, usedefault=True, desc="template grid (mm)")
    transform = traits.Enum("affine", "syn", usedefault=True)


class _TemplateOutput(TraitedSpec):
    fa_file = File(exists=True, desc="FA on the template grid (linear)")
    md_file = File(exists=True, desc="MD on the template grid (linear)")
    mask_file = File(exists=True, desc="brain mask on the template grid (nearest)")
    xfm_file = File(exists=True, desc="affine, ITK text (template -> DWI points, LPS)")
    warp_file = File(desc="affine + SyN as an ITK displacement field (syn only)")
    info = traits.Dict(desc="template, stages, metric values (template.describe)")


class TemplateRegister(SimpleInterface):
    """FA registered to a template (MNI152 2009a symmetric, nilearn): affine, optionally
    SyN (dipy); FA, MD and the brain mask resampled onto the template grid."""

    input_spec = _TemplateInput
    output_spec = _TemplateOutput

    def _run_interface(self, runtime):
        from neuroadapt.dwi.settings import TemplateSettings
        from neuroadapt.dwi.template import (
            describe,
            itk_affine_text,
            itk_displacement_image,
            load_template,
            register,
        )

        i = self.inputs
        fa = nib.load(i.fa_file)
        brain = np.asarray(nib.load(i.mask_file).dataobj) > 0
        settings = TemplateSettings(True, i.space, i.resolution_mm, i.transform)
        template = load_template(i.space, i.resolution_mm)
        registration = register(
            np.asarray(fa.dataobj), brain, fa.affine, template, settings, i.source
        )
        cwd = Path(runtime.cwd)
        for name in ("fa", "md"):
            data = np.asarray(nib.load(getattr(i, f"{name}_file")).dataobj)
            warped = registration.warp(data, fa.affine)
            self._results[f"{name}_file"] = save_nifti(warped, template.affine, cwd / f"{name}.nii")
        mask = registration.warp(brain.astype(np.float32), fa.affine, "nearest") > 0.5
        self._results["mask_file"] = save_nifti(mask, template.affine, cwd / "mask.nii", np.uint8)
        (cwd / "xfm.txt").write_text(itk_affine_text(registration.affine))
        self._results["xfm_file"] = str((cwd / "xfm.txt").resolve())
        if i.transform == "syn":
            nib.save(itk_displacement_image(registration), str(cwd / "warp.nii.gz"))
            self._results["warp_file"] = str((cwd / "warp.nii.gz").resolve())
        self._results["info"] = describe(registration)
        return runtime


def build_workflow(
    dwi_file: str,
    bval_file: str,
    bvec_file: str,
    settings: DwiSettings,
    base_dir: str | Path,
    given_mask: str | None = None,
) -> pe.Workflow:
    """The per-subject workflow in QSIPrep's order (denoise, unring, bias, motion, mask,
    tensor, then FA to a template when ``dwi.template`` is on); steps switched off are left
    out.

    ``given_mask``: the series was preprocessed upstream (QSIPrep) and this is its brain
    mask: denoising, unringing and motion correction are left out and the mask is used as
    it is; only the b0 reference and the tensor fit run."""
    from dataclasses import asdict, replace

    b0 = settings.b0_threshold
    m = settings.mask
    workflow = pe.Workflow(name="dwi_preproc", base_dir=str(base_dir))
    conform = pe.Node(
        Conform(
            dwi_file=str(Path(dwi_file).resolve()),
            bval_file=str(Path(bval_file).resolve()),
            bvec_file=str(Path(bvec_file).resolve()),
            b0_threshold=b0,
            median_radius=m.median_radius,
            numpass=m.numpass,
        ),
        name="conform",
    )
    series = (conform, "dwi_file")
    gradients_from = conform
    if given_mask is not None:
        settings = replace(
            settings,
            denoise=replace(settings.denoise, method="none"),
            unring=replace(settings.unring, enabled=False),
            bias=replace(settings.bias, enabled=False),
            motion=replace(settings.motion, enabled=False),
        )
    steps = []  # (node, takes the head mask) in QSIPrep's order
    if settings.denoise.method != "none":
        denoiser = Denoise(
            method=settings.denoise.method,
            patch_radius=settings.denoise.patch_radius,
            backend=settings.denoise.backend,
            b0_threshold=b0,
        )
        steps.append((pe.Node(denoiser, name="denoise"), True))
    if settings.unring.enabled:
        steps.append((pe.Node(Unring(backend=settings.unring.backend), name="unring"), False))
    if settings.bias.enabled:
        corrector = BiasCorrect(shrink_factor=settings.bias.shrink_factor, b0_threshold=b0)
        steps.append((pe.Node(corrector, name="bias"), True))
    if settings.motion.enabled:
        mover = MotionCorrect(settings=asdict(settings.motion), b0_threshold=b0)
        steps.append((pe.Node(mover, name="motion"), True))
    for node, masked in steps:
        # each step takes the series from the one before it; gradients and the head mask
        # come from the conformed input (only motion correction changes the b-vectors)
        workflow.connect(series[0], series[1], node, "dwi_file")
        if masked:
            inputs = [("bval_file", "bval_file"), ("bvec_file", "bvec_file")]
            workflow.connect([(conform, node, [*inputs, ("head_mask_file", "mask_file")])])
        series = (node, "dwi_file")
        if node.name == "motion":
            gradients_from = node
    brain = pe.Node(
        BrainMask(
            median_radius=m.median_radius, numpass=m.numpass, backend=m.backend, b0_threshold=b0
        ),
        name="mask",
    )
    if given_mask is not None:
        brain.inputs.given_mask_file = str(Path(given_mask).resolve())
    fit = pe.Node(
        FitTensor(
            fit_method=settings.tensor.fit_method,
            max_bval=settings.tensor.max_bval,
            backend=settings.tensor.backend,
            b0_threshold=b0,
        ),
        name="tensor",
    )
    for node in (brain, fit):
        workflow.connect(series[0], series[1], node, "dwi_file")
        workflow.connect(gradients_from, "bval_file", node, "bval_file")
        workflow.connect(gradients_from, "bvec_file", node, "bvec_file")
    workflow.connect(brain, "mask_file", fit, "mask_file")
    if settings.template.enabled:
        t = settings.template
        registerer = TemplateRegister(
            source=str(dwi_file),
            space=t.space,
            resolution_mm=t.resolution_mm,
            transform=t.transform,
        )
        template = pe.Node(registerer, name="template")
        workflow.connect(fit, "fa_file", template, "fa_file")
        workflow.connect(fit, "md_file", template, "md_file")
        workflow.connect(brain, "mask_file", template, "mask_file")
    workflow.config["execution"] = {
        "crashfile_format": "txt",
        "crashdump_dir": str(base_dir),
        "remove_unnecessary_outputs": "false",
        "stop_on_first_crash": "true",
    }
    return workflow


def run_workflow(workflow: pe.Workflow) -> dict[str, dict]:
    """Run serially; returns {node name: outputs as a dict} (the final series is the
    ``dwi_file`` of the last preprocessing node)."""
    graph = workflow.run(plugin="Linear")
    return {node.name: node.result.outputs.get() for node in graph.nodes()}
