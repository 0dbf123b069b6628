"""Seconds per diffusion step, dipy backend vs MRtrix3 backend, side by side in one run.

    .venv/bin/python benchmarks/bench_dwi.py                 # demo, realistic and real subjects
    .venv/bin/python benchmarks/bench_dwi.py --demo-only     # the demo subject only (~1 min)
    .venv/bin/python benchmarks/bench_dwi.py --real-only     # the real scans only
    .venv/bin/python benchmarks/bench_dwi.py --unring        # also time Gibbs unringing alone

For each subject (the demo's 40x48x38 x 39 volumes at 4 mm, and a realistic one: 96x96x60 x
65 volumes at 2 mm, both from the synthetic generator) it runs the whole per-subject chain
twice, with the default (dipy) backends and with MRtrix3's dwidenoise, dwi2mask and
dwi2tensor/tensor2metric, head-motion correction on in both (MRtrix3 has none; both use
ours). It prints the seconds of every nipype node, the ratio of each step to MRtrix3's same
step, the ratio of the two chains, and the ratio of the pipeline's tensor step (read files,
fit, write maps) to a direct dipy TensorModel call (the wrapper's overhead), and dipy's own
mppca against ours (batched, neuroadapt/dwi/mppca.py) on the same data. One thread
everywhere (OPENBLAS/OMP threads 1, MRtrix3 -nthreads 1), as the rule runs.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from neuroadapt.demo import generate_cohort  # noqa: E402
from neuroadapt.dwi import denoise, gradients, mask, mrtrix, tensor  # noqa: E402
from neuroadapt.dwi.pipeline import outputs_in, process_subject  # noqa: E402
from neuroadapt.dwi.settings import MaskSettings, settings_from_config  # noqa: E402
from neuroadapt.dwi.workflow import save_nifti  # noqa: E402

SUBJECTS = {
    "demo": {"kind": "dwi", "n_subjects": 4, "n_sites": 1},
    # ~ a typical research acquisition: 2 mm isotropic, 5 b0 + 60 directions at b=1000
    "realistic": {
        "kind": "dwi",
        "n_subjects": 4,
        "n_sites": 1,
        "shape": [96, 96, 60],
        "voxel_mm": 2.0,
        "n_b0": 5,
        "n_b1000": 60,
        "n_b2000": 0,
        "supersample": 1,
    },
}
DIPY = {"motion": {"iterations": 1}}
MRTRIX = DIPY | {
    "denoise": {"backend": "mrtrix3"},
    "mask": {"backend": "mrtrix3"},
    "tensor": {"backend": "mrtrix3"},
}


def chain_seconds(paths, config, folder: Path) -> dict[str, float]:
    started = time.perf_counter()
    summary = process_subject(*paths, [], settings_from_config(config), outputs_in(folder), "bench")
    return summary["timings"] | {"end to end": time.perf_counter() - started}


def direct_fit_seconds(paths, config: dict) -> float:
    series = gradients.to_ras(gradients.load_dwi(*paths))
    brain = mask.brain_mask(mask.b0_reference(series.data, series.b0_mask()), MaskSettings())
    settings = settings_from_config(config).tensor
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        tensor.fit_tensor(series.data, series.bvals, series.bvecs_voxel, brain, settings)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def mppca_against_dipy(paths) -> tuple[float, float, float]:
    """Seconds of dipy's mppca and of ours (neuroadapt.dwi.mppca) on the same series and
    head mask, and their largest difference relative to the series' maximum."""
    from dipy.denoise.localpca import mppca as dipy_mppca

    from neuroadapt.dwi.mppca import mppca

    series = gradients.to_ras(gradients.load_dwi(*paths))
    head = mask.head_mask(mask.b0_reference(series.data, series.b0_mask()), MaskSettings())
    started = time.perf_counter()
    reference, _ = dipy_mppca(series.data, mask=head, patch_radius=2, return_sigma=True)
    dipy_s = time.perf_counter() - started
    started = time.perf_counter()
    ours, _ = mppca(series.data, mask=head, patch_radius=2)
    ours_s = time.perf_counter() - started
    difference = np.nanmax(np.abs(ours - reference)) / np.nanmax(reference)
    return dipy_s, ours_s, float(difference)


def unring_seconds(paths, folder: Path) -> tuple[float, float]:
    series = gradients.to_ras(gradients.load_dwi(*paths))
    image = save_nifti(series.data, series.affine, folder / "unring_in.nii")
    started = time.perf_counter()
    denoise.unring(series.data)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    mrtrix.unring(image, folder)
    return ours, time.perf_counter() - started


#: real scans: DICOM series of tests/data/dicom (see its README), converted with dcm2niix:
#: UIH 64x64x20, 17 volumes at b=930; Siemens 72x72x39, 21 volumes, one b=2500 shell
REAL = {"real_uih": "uih_umr770_dwi.tar.gz", "real_siemens": "siemens_xa30_dwi.tar.gz"}
SHELL = {"real_siemens": {"tensor": {"max_bval": 2600}}}


def subject_files(name: str, root: Path) -> list[str]:
    """.nii.gz, .bval, .bvec of the benchmark subject ``name``."""
    if name in REAL:
        import subprocess
        import tarfile

        with tarfile.open(REPO / "tests" / "data" / "dicom" / REAL[name]) as tar:
            tar.extractall(root / f"{name}_dicom", filter="data")
        (root / name).mkdir()
        dcm2niix = Path(sys.executable).parent / "dcm2niix"
        command = [str(dcm2niix), "-b", "y", "-z", "y", "-f", "dwi", "-o", str(root / name)]
        subprocess.run([*command, str(root / f"{name}_dicom")], check=True, capture_output=True)
        stem = str(root / name / "dwi")
    else:
        bids, truth = root / name, root / f"{name}_truth"
        generate_cohort(SUBJECTS[name], bids, truth, f"bench.{name}")
        stem = str(sorted(bids.glob("sub-*/dwi/*_dwi.nii.gz"))[0]).removesuffix(".nii.gz")
    return [f"{stem}.nii.gz", f"{stem}.bval", f"{stem}.bvec"]


def bench(name: str, root: Path, with_unring: bool) -> None:
    started = time.perf_counter()
    paths = subject_files(name, root)
    shape = gradients.load_dwi(*paths).data.shape
    print(f"\n== {name} subject {shape} (made in {time.perf_counter() - started:.0f} s)")
    shell = SHELL.get(name, {})
    ours = chain_seconds(paths, DIPY | shell, root / f"{name}_dipy")
    theirs = chain_seconds(
        paths,
        {**MRTRIX, "tensor": MRTRIX["tensor"] | shell.get("tensor", {})},
        root / f"{name}_mrtrix",
    )
    print(f"  {'step':<16} {'dipy s':>9} {'MRtrix3 s':>10} {'dipy/MRtrix3':>13}")
    for step in ours:
        ratio = ours[step] / theirs[step] if theirs.get(step) else float("nan")
        print(
            f"  {step:<16} {ours[step]:9.2f} {theirs.get(step, float('nan')):10.2f} {ratio:13.2f}"
        )
    print(
        f"  chain ratio (default dipy chain / MRtrix3 chain, motion on in both): "
        f"{ours['workflow_total'] / theirs['workflow_total']:.2f}"
    )
    direct = direct_fit_seconds(paths, shell)
    print(
        f"  tensor step {ours['tensor']:.2f} s vs direct dipy fit {direct:.2f} s: "
        f"wrapper overhead ratio {ours['tensor'] / direct:.2f}"
    )
    dipy_s, ours_s, difference = mppca_against_dipy(paths)
    print(
        f"  MP-PCA alone: dipy's mppca {dipy_s:.1f} s, ours (batched) {ours_s:.1f} s, "
        f"ratio {dipy_s / ours_s:.1f}x; largest difference {difference:.1e} of the maximum"
    )
    if with_unring:
        dipy_s, mrtrix_s = unring_seconds(paths, root)
        print(
            f"  unring alone: dipy {dipy_s:.1f} s, MRtrix3 {mrtrix_s:.1f} s, "
            f"ratio {dipy_s / mrtrix_s:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-only", action="store_true", help="skip the larger subjects")
    parser.add_argument("--real-only", action="store_true", help="the real scans only")
    parser.add_argument("--unring", action="store_true", help="also time Gibbs unringing alone")
    args = parser.parse_args()
    if shutil.which("dwi2tensor") is None:
        sys.exit("MRtrix3 is not on PATH (Debian: apt-get install mrtrix3)")
    with tempfile.TemporaryDirectory() as folder:
        names = ["demo"] + ([] if args.demo_only else ["realistic", *REAL])
        for name in list(REAL) if args.real_only else names:
            bench(name, Path(folder), args.unring)


if __name__ == "__main__":
    main()
