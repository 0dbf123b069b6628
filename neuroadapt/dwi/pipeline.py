"""One subject end to end, as the ``dwi`` rule runs it: check the inputs, run the nipype
workflow in a temporary work directory, then write the BIDS-derivatives outputs.

The inputs are checked before anything runs (a bad file is an InputError naming it), and
every output is first written under a temporary name beside its destination and renamed
only when all of them are ready, so a failure leaves no output behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np

from neuroadapt import __version__
from neuroadapt.bids import merge_sidecars
from neuroadapt.dwi import gradients, model_ready, motion, qc
from neuroadapt.dwi.settings import DwiSettings

log = logging.getLogger(__name__)

MAPS = ("fa", "md", "ad", "rd", "rgb")
# Output keys of :func:`process_subject` (the rule's named outputs).
OUTPUT_KEYS = (
    "preproc",
    "bval",
    "bvec",
    "preproc_json",
    "b0",
    "mask",
    *MAPS,
    *(f"{name}_json" for name in MAPS),
    "confounds",
    "confounds_json",
    "imageqc",
    "tensor_figure",
    "motion_figure",
    "model_npy",
    "model_nii",
    "model_json",
)
# Outputs of the template registration (dwi.template on), and of its SyN warp.
TEMPLATE_KEYS = (
    "template_fa",
    "template_md",
    "template_fa_json",
    "template_md_json",
    "template_mask",
    "template_xfm",
    "template_xfm_json",
    "template_figure",
)
SYN_KEYS = ("template_warp", "template_warp_json")
_MAP_INFO = {
    "fa": ("fractional anisotropy", "arbitrary"),
    "md": ("mean diffusivity", "mm^2/s"),
    "ad": ("axial diffusivity (largest eigenvalue)", "mm^2/s"),
    "rd": ("radial diffusivity (mean of the two smaller eigenvalues)", "mm^2/s"),
    "rgb": ("colour FA: |principal eigenvector| x FA, RGB along the RAS axes", "arbitrary"),
}


def output_keys(settings: DwiSettings) -> tuple[str, ...]:
    """The output keys :func:`process_subject` writes with ``settings`` (the dwi rule's
    named outputs)."""
    keys = OUTPUT_KEYS
    if settings.template.enabled:
        keys += TEMPLATE_KEYS
        if settings.template.transform == "syn":
            keys += SYN_KEYS
    return keys


def outputs_in(folder: str | Path) -> dict[str, str]:
    """Every output of :func:`process_subject` under a plain name in ``folder`` (for use
    outside the workflow: notebooks, tests, benchmarks), template outputs included."""
    folder = Path(folder)
    outputs = {key: str(folder / f"{key}.txt") for key in (*OUTPUT_KEYS, *TEMPLATE_KEYS, *SYN_KEYS)}
    for key in ("preproc", "b0", "mask", *MAPS, "model_nii"):
        outputs[key] = str(folder / f"{key}.nii.gz")
    for key in ("template_fa", "template_md", "template_mask", "template_warp"):
        outputs[key] = str(folder / f"{key}.nii.gz")
    for key in ("tensor_figure", "motion_figure", "template_figure"):
        outputs[key] = str(folder / f"{key}.png")
    for key in ("template_fa_json", "template_md_json", "template_xfm_json", "template_warp_json"):
        outputs[key] = str(folder / f"{key}.json")
    outputs["model_npy"] = str(folder / "model.npy")
    return outputs


def process_subject(
    dwi: str,
    bval: str,
    bvec: str,
    sidecars: Sequence[str],
    settings: DwiSettings,
    outputs: Mapping[str, str],
    subject: str,
    work_root: str | None = None,
    keep_work: bool = False,
    mask: str | None = None,
) -> dict:
    """Preprocess one DWI series and write ``outputs`` (keys: :data:`OUTPUT_KEYS`).

    ``mask``: the series comes preprocessed from QSIPrep and this is its brain mask; only
    the b0 reference and the tensor fit run, and the motion confounds are QSIPrep's own
    (``*confounds*.tsv`` beside the series) when present.
    Returns a summary: per-step seconds (``timings``), the image-QC row and the noise sigma.
    """
    from neuroadapt.dwi.workflow import build_workflow, run_workflow

    missing = [key for key in output_keys(settings) if key not in outputs]
    if missing:
        raise ValueError(f"outputs lack {', '.join(missing)} (the settings write them)")
    # InputErrors before any work: the series, and a given mask on the series' grid
    series = gradients.load_dwi(dwi, bval, bvec, settings.b0_threshold)
    # before any step runs: a series the tensor fit cannot use stops here, naming the file
    from neuroadapt.dwi.tensor import shell_volumes

    shell_volumes(series.bvals, settings.tensor.max_bval, settings.b0_threshold, source=bval)
    if mask is not None:
        from neuroadapt.dwi.mask import conform_mask

        canonical = gradients.to_ras(series)
        conform_mask(mask, canonical.data.shape[:3], canonical.affine)
    del series
    acquisition = merge_sidecars(sidecars) if sidecars else {}
    work = Path(tempfile.mkdtemp(prefix=f"neuroadapt-dwi-{subject}-", dir=work_root))
    try:
        workflow = build_workflow(dwi, bval, bvec, settings, work, given_mask=mask)
        started = time.perf_counter()
        results = run_workflow(workflow)
        total = time.perf_counter() - started
        timings = _node_seconds(work / workflow.name, results)
        summary = _write_outputs(
            results, settings, outputs, subject, [dwi, bval, bvec], acquisition, mask
        )
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    summary["timings"] = timings | {"workflow_total": total}
    return summary


def _node_seconds(folder: Path, results: Mapping[str, dict]) -> dict[str, float]:
    """Seconds each node's interface ran, from nipype's runtime records."""
    import gzip
    import pickle

    seconds = {}
    for name in results:
        for result in (folder / name).glob("result_*.pklz"):
            with gzip.open(result) as stream:
                runtime = pickle.load(stream).runtime
            seconds[name] = float(getattr(runtime, "duration", float("nan")))
    return seconds


def _final(results: Mapping[str, dict], settings: DwiSettings) -> tuple[str, str, str]:
    """The preprocessed series (file, bval, bvec): the last step that ran."""
    order = ["conform", "denoise", "unring", "bias", "motion"]
    last = [name for name in order if name in results][-1]
    gradient_node = "motion" if "motion" in results else "conform"
    return (
        results[last]["dwi_file"],
        results[gradient_node]["bval_file"],
        results[gradient_node]["bvec_file"],
    )


def _write_outputs(results, settings, outputs, subject, sources, acquisition, upstream) -> dict:
    dwi_file, bval_file, bvec_file = _final(results, settings)
    series = nib.load(dwi_file)
    affine = series.affine
    bvals = np.loadtxt(bval_file, ndmin=1)
    n = len(bvals)
    if "motion" in results:
        transforms = np.load(results["motion"]["transforms_file"])
        parameters = motion.motion_parameters(transforms)
        fd = motion.framewise_displacement(parameters)
    elif upstream:
        parameters, fd = qc.upstream_confounds(sources[0], n)
    else:
        parameters = motion.motion_parameters(np.repeat(np.eye(4)[None], n, axis=0))
        fd = motion.framewise_displacement(parameters)
    confounds = qc.confounds_table(bvals, parameters, fd)

    brain = np.asarray(nib.load(results["mask"]["mask_file"]).dataobj) > 0
    head = np.asarray(nib.load(results["conform"]["head_mask_file"]).dataobj) > 0
    raw = nib.load(results["conform"]["dwi_file"])
    first_b0 = int(np.flatnonzero(bvals <= settings.b0_threshold)[0])
    snr = qc.b0_snr(np.asarray(raw.dataobj[..., first_b0], dtype=np.float32), brain, ~head)
    maps = {name: nib.load(results["tensor"][f"{name}_file"]) for name in MAPS}
    fa = np.asarray(maps["fa"].dataobj)
    md = np.asarray(maps["md"].dataobj)
    nonphysical = int(results["tensor"]["nonphysical"])
    qc_row = qc.image_qc_row(subject, fd, snr, fa, brain, nonphysical, settings.qc)
    registered = _template_maps(results["template"], settings) if "template" in results else None
    margin = settings.model_ready.margin_mm
    if settings.model_ready.space == "template":
        r = registered
        tensor, box = model_ready.model_ready(
            r["fa"], r["md"], r["mask"], r["affine"], settings.model_ready, r["template"].brain
        )
        space = {
            "Space": "brain box: isotropic RAS grid over the bounding box of the "
            f"{r['template'].space} template's brain mask plus {margin:g} mm, in "
            f"{r['template'].space} (FA/MD registered to the template, "
            f"{settings.template.transform}); the same grid for every subject",
            "Template": r["info"]["Template"],
            "Registration": r["info"]["Registration"],
        }
    else:
        tensor, box = model_ready.model_ready(fa, md, brain, affine, settings.model_ready)
        space = {
            "Space": "brain box: isotropic RAS grid over the brain mask's bounding box "
            f"plus {margin:g} mm, in the subject's DWI space"
        }

    steps = {
        "Reorientation": "closest canonical RAS+ (nibabel), b-vectors rotated",
    }
    if upstream:
        steps |= {
            "Preprocessing": "QSIPrep, upstream: denoising, unringing, head-motion/eddy "
            "correction and the brain mask were taken as they are",
            "BrainMask": {"Source": str(upstream)},
        }
    else:
        steps |= _own_steps(results, settings)
    tensor_info = asdict(settings.tensor) | {
        "Model": "diffusion tensor ("
        + ("dipy TensorModel" if settings.tensor.backend == "dipy" else "MRtrix3 dwi2tensor")
        + ")",
        "VolumesUsed": results["tensor"]["volumes_used"],
        "NonphysicalVoxels": nonphysical,
        "FAClipped": [0, 1],
    }
    common = {"Sources": [str(s) for s in sources], "neuroadapt": __version__}

    staged: list[tuple[str, str]] = []
    try:
        stage = _Stager(staged)
        stage.nifti(outputs["preproc"], np.asarray(series.dataobj, np.float32), affine)
        stage.copy(outputs["bval"], bval_file)
        stage.copy(outputs["bvec"], bvec_file)
        stage.json(
            outputs["preproc_json"],
            {k: acquisition[k] for k in sorted(acquisition) if k != "SliceTiming"}
            | common
            | {"Steps": steps},
        )
        stage.copy_nifti(outputs["b0"], results["mask"]["b0_file"])
        stage.nifti(outputs["mask"], brain, affine, np.uint8)
        for name in MAPS:
            stage.nifti(outputs[name], np.asarray(maps[name].dataobj, np.float32), affine)
            description, units = _MAP_INFO[name]
            stage.json(
                outputs[f"{name}_json"],
                common | {"Description": description, "Units": units, "Tensor": tensor_info},
            )
        stage.text(outputs["confounds"], confounds.to_csv(sep="\t", index=False, na_rep="n/a"))
        stage.json(outputs["confounds_json"], _confounds_sidecar())
        stage.text(
            outputs["imageqc"],
            _tsv_row(qc_row),
        )
        stage.figure(outputs["tensor_figure"], lambda p: qc.tensor_figure(fa, md, brain, p))
        stage.figure(outputs["motion_figure"], lambda p: qc.motion_figure(confounds, p))
        stage.npy(outputs["model_npy"], tensor)
        stage.nifti(
            outputs["model_nii"], np.moveaxis(tensor, 0, -1).astype(np.float32), box, np.float32
        )
        stage.json(
            outputs["model_json"],
            common
            | space
            | {
                "TensorChannels": list(model_ready.CHANNELS),
                "TensorShape": list(tensor.shape),
                "TensorDtype": "float16",
                "Affine": box.tolist(),
                "Normalisation": {
                    "fa": "as is, clipped to [0, 1], 0 outside the brain mask",
                    "md": f"divided by {settings.model_ready.md_scale:g} mm^2/s, clipped to "
                    "[0, 1], 0 outside the brain mask",
                },
            },
        )
        if registered is not None:
            _stage_template(stage, outputs, registered, common, tensor_info)
        for staging, destination in staged:
            os.replace(staging, destination)
    except BaseException:
        for staging, _ in staged:
            Path(staging).unlink(missing_ok=True)
        raise
    noise_sigma = steps.get("Denoising", {}).get("NoiseSigma")
    summary = {"qc": qc_row, "noise_sigma": noise_sigma}
    if registered is not None:
        summary["template"] = registered["info"]["Registration"]
    return summary


def _template_maps(node: Mapping, settings: DwiSettings) -> dict:
    """The template node's maps (template grid) with the template and its description."""
    from neuroadapt.dwi.template import load_template

    fa = nib.load(node["fa_file"])
    return {
        "fa": np.asarray(fa.dataobj, dtype=np.float32),
        "md": np.asarray(nib.load(node["md_file"]).dataobj, dtype=np.float32),
        "mask": np.asarray(nib.load(node["mask_file"]).dataobj) > 0,
        "affine": fa.affine,
        "template": load_template(settings.template.space, settings.template.resolution_mm),
        "info": node["info"],
        "xfm_file": node["xfm_file"],
        "warp_file": node["warp_file"] if isinstance(node.get("warp_file"), str) else None,
    }


def _stage_template(stage, outputs, registered, common, tensor_info) -> None:
    """Template-space FA/MD/mask, the transform files and the registration figure."""
    from neuroadapt.dwi.template import read_itk_affine

    info = registered["info"]
    template = registered["template"]
    affine = registered["affine"]
    transforms = [Path(outputs["template_xfm"]).name]
    if "template_warp" in outputs and registered["warp_file"]:
        transforms.append(Path(outputs["template_warp"]).name)
    for name in ("fa", "md"):
        stage.nifti(outputs[f"template_{name}"], registered[name], affine)
        description, units = _MAP_INFO[name]
        stage.json(
            outputs[f"template_{name}_json"],
            common
            | {"Description": description, "Units": units, "Tensor": tensor_info}
            | info
            | {"Resampling": "linear, once, from the DWI-space map", "Transforms": transforms},
        )
    stage.nifti(outputs["template_mask"], registered["mask"], affine, np.uint8)
    stage.copy(outputs["template_xfm"], registered["xfm_file"])
    direction = (
        "maps template points to DWI points (RAS/LPS mm), the transform that resamples a "
        "DWI-space image onto the template grid (ITK/ANTs image-transform convention)"
    )
    stage.json(
        outputs["template_xfm_json"],
        common
        | {
            "FromSpace": "dwi",
            "ToSpace": template.space,
            "Mode": "image",
            "Format": "ITK text transform, AffineTransform_double_3_3 (LPS, centre 0 0 0)",
            "Direction": direction,
            "MatrixRAS": read_itk_affine(registered["xfm_file"]).round(8).tolist(),
        }
        | info,
    )
    if registered["warp_file"] and "template_warp" in outputs:
        stage.copy(outputs["template_warp"], registered["warp_file"])
        stage.json(
            outputs["template_warp_json"],
            common
            | {
                "FromSpace": "dwi",
                "ToSpace": template.space,
                "Mode": "image",
                "Format": "ITK displacement field: NIfTI (X, Y, Z, 1, 3), LPS mm, on the "
                "template grid; template point p maps to p + u(p)",
                "Direction": direction,
                "Composite": f"the affine ({transforms[0]}) and SyN together: apply this "
                "file alone",
            }
            | info,
        )
    stage.figure(
        outputs["template_figure"],
        lambda p: qc.template_figure(registered["fa"], template.wm, template.brain, p),
    )


def _own_steps(results, settings) -> dict:
    """The preprocessing steps this pipeline ran, with their settings."""
    return {
        "Denoising": asdict(settings.denoise)
        | {"NoiseSigma": results.get("denoise", {}).get("noise_sigma")},
        "GibbsUnringing": asdict(settings.unring),
        "BiasFieldCorrection": asdict(settings.bias) | {"Method": "N4 (SimpleITK) on the mean b0"},
        "MotionCorrection": asdict(settings.motion)
        | {"Method": "rigid, dipy affine_registration (MI) to the b0 / tensor prediction"},
        "BrainMask": asdict(settings.mask)
        | {
            "Method": "dipy median_otsu on the mean b0"
            if settings.mask.backend == "dipy"
            else "MRtrix3 dwi2mask"
        },
    }


def _tsv_row(row: Mapping) -> str:
    values = ["n/a" if isinstance(v, float) and not np.isfinite(v) else v for v in row.values()]
    return "\t".join(row) + "\n" + "\t".join(str(v) for v in values) + "\n"


def _confounds_sidecar() -> dict:
    columns = {
        name: {"Description": f"translation along {name[-1]} (reference -> volume)", "Units": "mm"}
        for name in motion.PARAMETER_NAMES[:3]
    } | {
        name: {"Description": f"rotation about {name[-1]} (Euler xyz)", "Units": "rad"}
        for name in motion.PARAMETER_NAMES[3:]
    }
    return {
        "bval": {"Description": "b-value of the volume", "Units": "s/mm^2"},
        **columns,
        "framewise_displacement": {
            "Description": "Power et al. (2012) framewise displacement, 50 mm head radius",
            "Units": "mm",
        },
    }


class _Stager:
    """Writes each output to a hidden temporary name beside its destination."""

    def __init__(self, staged: list[tuple[str, str]]):
        self.staged = staged

    def _path(self, destination: str) -> str:
        folder = Path(destination).parent
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(destination).name
        suffix = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
        handle, staging = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=folder)
        os.close(handle)
        os.chmod(staging, 0o644)
        self.staged.append((staging, destination))
        return staging

    def nifti(self, destination, data, affine, dtype=np.float32):
        image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, self._path(destination))

    def copy_nifti(self, destination, source):
        image = nib.load(source)
        self.nifti(destination, np.asarray(image.dataobj), image.affine)

    def copy(self, destination, source):
        shutil.copyfile(source, self._path(destination))

    def text(self, destination, text):
        Path(self._path(destination)).write_text(text)

    def json(self, destination, payload):
        self.text(destination, json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n")

    def npy(self, destination, array):
        with open(self._path(destination), "wb") as stream:
            np.save(stream, array)

    def figure(self, destination, draw):
        draw(self._path(destination))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
