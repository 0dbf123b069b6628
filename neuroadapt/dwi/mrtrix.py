"""MRtrix3 backend: the commands QSIPrep itself calls (dwidenoise, mrdegibbs, dwi2mask,
dwi2tensor + tensor2metric), run through nipype's ``mrtrix3`` interfaces.

Files in, files out, in the calling node's folder. Series are the conformed RAS NIfTI with
FSL .bval/.bvec that the other nodes exchange (``-fslgrad``), so both backends see the same
data. MRtrix3 is a set of binaries (Debian package ``mrtrix3``; conda-forge ``mrtrix3`` on
clusters): :func:`check_commands` fails at start-up, not mid-run, when one is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from neuroadapt.errors import ConfigError

BACKENDS = ("dipy", "mrtrix3")
# The binaries each switchable step needs with the mrtrix3 backend.
COMMANDS = {
    "denoise": ("dwidenoise",),
    "unring": ("mrdegibbs",),
    "mask": ("dwi2mask",),
    "tensor": ("dwi2tensor", "tensor2metric"),
}


def check_commands(backends: dict[str, str], where: str = "dwi") -> None:
    """ConfigError naming the first step whose mrtrix3 backend lacks a binary on PATH."""
    for step, backend in backends.items():
        if backend != "mrtrix3":
            continue
        missing = [c for c in COMMANDS[step] if shutil.which(c) is None]
        if missing:
            raise ConfigError(
                f"{where}.{step}.backend",
                f"is mrtrix3 but {', '.join(missing)} is not on PATH",
                "install MRtrix3 (Debian: apt-get install mrtrix3; clusters: conda-forge "
                "mrtrix3, or the envs/dwi.yaml env with --sdm conda), or use backend: dipy",
            )


class MrtrixError(RuntimeError):
    """An MRtrix3 command failed; the message holds its command line and error output."""


def _run(interface, extra: str = "") -> object:
    """Run a nipype interface (with ``extra`` command-line flags); its outputs. One thread:
    subjects run in parallel instead; -quiet keeps progress bars out of the job logs; -force
    lets a rerun in the same folder replace its files.

    nipype's mrtrix3 interfaces do not raise on a non-zero exit status (seen with nipype
    1.11: the run "succeeds" and an old output file would be read), so it is checked here."""
    interface.inputs.nthreads = 1
    interface.inputs.args = f"{extra} -quiet -force".strip()
    command = interface.cmdline
    try:
        result = interface.run()
    except (OSError, RuntimeError) as error:  # e.g. an output the command did not write
        raise MrtrixError(f"{command}: {error}") from None
    if result.runtime.returncode != 0:
        raise MrtrixError(
            f"{command}: exit status {result.runtime.returncode}: "
            f"{(result.runtime.stderr or '').strip()[-500:]}"
        )
    return result.outputs


def denoise(
    dwi_file: str, mask_file: str, patch_radius: int, folder: Path
) -> tuple[np.ndarray, float | None]:
    """dwidenoise (MP-PCA, Veraart et al. 2016) in ``mask_file`` with (2r+1)^3 windows:
    the denoised (X, Y, Z, N) series (input values outside the mask, as the dipy backend
    keeps them) and the median noise sigma in the mask."""
    from nipype.interfaces.mrtrix3 import DWIDenoise

    width = 2 * patch_radius + 1
    outputs = _run(
        DWIDenoise(  # MRtrix3 3.0's dwidenoise takes no gradient table
            in_file=dwi_file,
            mask=mask_file,
            extent=(width, width, width),
            out_file=str(folder / "mrtrix_denoised.nii"),
            noise=str(folder / "mrtrix_noise.nii"),
        )
    )
    original = np.asarray(nib.load(dwi_file).dataobj, dtype=np.float32)
    denoised = np.asarray(nib.load(outputs.out_file).dataobj, dtype=np.float32)
    inside = np.asarray(nib.load(mask_file).dataobj) > 0
    denoised[~inside] = original[~inside]
    noise = np.asarray(nib.load(outputs.noise).dataobj, dtype=np.float32)
    sigma = float(np.median(noise[inside])) if inside.any() else None
    return denoised, sigma


def unring(dwi_file: str, folder: Path) -> np.ndarray:
    """mrdegibbs (Kellner et al. 2016) in the axial plane of the RAS series."""
    from nipype.interfaces.mrtrix3 import MRDeGibbs

    outputs = _run(
        MRDeGibbs(in_file=dwi_file, axes=[0, 1], out_file=str(folder / "mrtrix_unring.nii"))
    )
    return np.asarray(nib.load(outputs.out_file).dataobj, dtype=np.float32)


def brain_mask(dwi_file: str, bval: str, bvec: str, folder: Path) -> np.ndarray:
    """dwi2mask: boolean (X, Y, Z) brain mask of the series."""
    from nipype.interfaces.mrtrix3 import BrainMask

    outputs = _run(
        BrainMask(in_file=dwi_file, grad_fsl=(bvec, bval), out_file=str(folder / "mrtrix_mask.nii"))
    )
    return np.asarray(nib.load(outputs.out_file).dataobj) > 0


def fit_tensor(
    dwi_file: str, bval: str, bvec: str, mask_file: str, fit_method: str, folder: Path
) -> dict[str, np.ndarray]:
    """dwi2tensor + tensor2metric on the series as given (select the shell before):
    ``fa``, ``md`` (ADC), ``ad``, ``rd`` (mm^2/s for b in s/mm^2), ``evec`` (principal
    eigenvector, X, Y, Z, 3, unmodulated) and ``tensor`` (X, Y, Z, 6: D11 D22 D33 D12 D13
    D23). ``fit_method``: WLS (MRtrix3's default iteratively reweighted fit) or OLS
    (``-ols -iter 0``); MRtrix3 has no NLLS."""
    from nipype.interfaces.mrtrix3 import FitTensor, TensorMetrics

    if fit_method not in ("WLS", "OLS"):
        raise ConfigError(
            "dwi.tensor.fit_method",
            f"{fit_method} is not available with the mrtrix3 backend",
            "use WLS or OLS, or dwi.tensor.backend: dipy",
        )
    fit = FitTensor(
        in_file=dwi_file,
        grad_fsl=(bvec, bval),
        in_mask=mask_file,
        out_file=str(folder / "mrtrix_tensor.nii"),
    )
    tensor_file = _run(fit, "-ols -iter 0" if fit_method == "OLS" else "").out_file
    names = {"fa": "out_fa", "md": "out_adc", "ad": "out_ad", "rd": "out_rd", "evec": "out_evec"}
    metrics = TensorMetrics(in_file=tensor_file, in_mask=mask_file, modulate="none")
    for name, trait in names.items():
        setattr(metrics.inputs, trait, str(folder / f"mrtrix_{name}.nii"))
    outputs = _run(metrics)
    maps = {
        name: np.nan_to_num(np.asarray(nib.load(getattr(outputs, trait)).dataobj, np.float32))
        for name, trait in names.items()
    }
    maps["tensor"] = np.asarray(nib.load(tensor_file).dataobj, dtype=np.float64)
    return maps


def eigenvalues(tensor: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 3) eigenvalues, largest first, of MRtrix3's (X, Y, Z, 6) tensor image."""
    d11, d22, d33, d12, d13, d23 = np.moveaxis(tensor, -1, 0)
    matrix = np.stack(
        [
            np.stack([d11, d12, d13], -1),
            np.stack([d12, d22, d23], -1),
            np.stack([d13, d23, d33], -1),
        ],
        -2,
    )
    return np.linalg.eigvalsh(np.nan_to_num(matrix))[..., ::-1]
