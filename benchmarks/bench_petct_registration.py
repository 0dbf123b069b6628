"""Benchmark: PET-to-CT rigid registration, neuroadapt (SimpleITK) vs elastix and ANTsPy.

Prints, per subject of the demo_petct cohort (``make demo`` first), wall time and target
registration error (mean and max over the CT body voxels, against the generator's known
transform) for each tool, then medians and ratios (peer / neuroadapt). One thread per tool.

Peers, each skipped with a message when absent:
- elastix (Debian package ``elastix``, 5.0.1): rigid Euler transform, Mattes MI, 3-level
  pyramid, centre-of-gravity initialisation; the command-line tool, as its users run it.
- ANTsPy pins numpy/scipy versions the main environment cannot take, so it runs in a
  subprocess of another interpreter (``--ants-python``, default /tmp/antsvenv/bin/python),
  made with ``python3 -m venv /tmp/antsvenv && /tmp/antsvenv/bin/pip install antspyx==0.6.1``.

    .venv/bin/python benchmarks/bench_petct_registration.py --subjects 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nibabel.affines import apply_affine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuroadapt.petct.images import load_image, ras_affine, to_array  # noqa: E402
from neuroadapt.petct.registration import (  # noqa: E402
    itk_to_pet_to_ct,
    register,
    rotation_error_deg,
    target_registration_error,
)

ANTS_SCRIPT = """
import json, sys, time
import ants
ct = ants.image_read(sys.argv[1]) + 1024.0  # air at 0, as for our moments initialisation
pet = ants.image_read(sys.argv[2])
start = time.perf_counter()
result = ants.registration(ct, pet, "Rigid", aff_metric="mattes")
seconds = time.perf_counter() - start
transform = ants.read_transform(result["fwdtransforms"][0])
print(json.dumps({"seconds": seconds, "parameters": [float(v) for v in transform.parameters],
                  "centre": [float(v) for v in transform.fixed_parameters]}))
"""


def ants_pet_to_ct(ants_python: str, ct: Path, pet: Path) -> tuple[np.ndarray, float]:
    env = os.environ | {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [ants_python, "-c", ANTS_SCRIPT, str(ct), str(pet)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(payload["parameters"][:9])
    transform.SetTranslation(payload["parameters"][9:])
    transform.SetCenter(payload["centre"])
    return itk_to_pet_to_ct(transform), payload["seconds"]


# elastix parameter file: rigid, Mattes MI, multi-resolution; the settings elastix's own
# rigid examples use, with centre-of-gravity initialisation (CT shifted so air is 0).
ELASTIX_PARAMETERS = """
(FixedInternalImagePixelType "float")
(MovingInternalImagePixelType "float")
(Registration "MultiResolutionRegistration")
(Metric "AdvancedMattesMutualInformation")
(NumberOfHistogramBins 32)
(Transform "EulerTransform")
(AutomaticScalesEstimation "true")
(AutomaticTransformInitialization "true")
(AutomaticTransformInitializationMethod "CenterOfGravity")
(Optimizer "AdaptiveStochasticGradientDescent")
(MaximumNumberOfIterations 300)
(NumberOfResolutions 3)
(FixedImagePyramid "FixedSmoothingImagePyramid")
(MovingImagePyramid "MovingSmoothingImagePyramid")
(ImageSampler "RandomCoordinate")
(NumberOfSpatialSamples 4096)
(NewSamplesEveryIteration "true")
(Interpolator "LinearInterpolator")
(ResampleInterpolator "FinalBSplineInterpolator")
(FinalBSplineInterpolationOrder 1)
(Resampler "DefaultResampler")
(DefaultPixelValue 0)
(WriteResultImage "false")
(HowToCombineTransforms "Compose")
"""


def elastix_pet_to_ct(ct: sitk.Image, pet: sitk.Image) -> tuple[np.ndarray, float]:
    """pet_to_ct (4x4, RAS) from elastix's rigid registration, and its wall time (s)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sitk.WriteImage(ct + 1024.0, str(root / "ct.nii.gz"))  # air at 0
        sitk.WriteImage(pet, str(root / "pet.nii.gz"))
        (root / "rigid.txt").write_text(ELASTIX_PARAMETERS)
        start = time.perf_counter()
        subprocess.run(
            [
                "elastix",
                "-f",
                root / "ct.nii.gz",
                "-m",
                root / "pet.nii.gz",
                "-p",
                root / "rigid.txt",
                "-out",
                root,
                "-threads",
                "1",
            ],
            capture_output=True,
            check=True,
        )
        seconds = time.perf_counter() - start
        fields = {}
        for line in (root / "TransformParameters.0.txt").read_text().splitlines():
            if line.startswith("(") and line.endswith(")"):
                key, *values = line[1:-1].split()
                fields[key] = values
    angles_and_shift = [float(v) for v in fields["TransformParameters"]]
    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(v) for v in fields["CenterOfRotationPoint"]])
    transform.SetComputeZYX(fields.get("ComputeZYX", ['"false"'])[0] == '"true"')
    transform.SetRotation(*angles_and_shift[:3])
    transform.SetTranslation(angles_and_shift[3:])
    return itk_to_pet_to_ct(transform), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", default="resources/demo/demo_petct")
    parser.add_argument("--truth", default="resources/demo/ground_truth/demo_petct")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--ants-python", default="/tmp/antsvenv/bin/python")
    args = parser.parse_args()
    bids, truth_dir = Path(args.bids), Path(args.truth)
    with_ants = Path(args.ants_python).is_file()
    with_elastix = shutil.which("elastix") is not None
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    rows = []
    print(f"{'subject':8} {'tool':10} {'time s':>7} {'TRE mean':>9} {'TRE max':>8} {'rot err':>8}")
    for subject in sorted(p.name for p in bids.glob("sub-*"))[: args.subjects]:
        ct_path = bids / subject / "ct" / f"{subject}_ct.nii.gz"
        pet_path = bids / subject / "pet" / f"{subject}_trc-FDG_pet.nii.gz"
        truth = np.asarray(
            json.loads((truth_dir / f"{subject}_truth.json").read_text())["pet_to_ct"]
        )
        ct, pet = load_image(ct_path), load_image(pet_path)
        points = apply_affine(ras_affine(ct), np.argwhere(to_array(ct) > -500))
        start = time.perf_counter()
        estimates = {"simpleitk": (register(ct, pet, threads=1).pet_to_ct, 0.0)}
        estimates["simpleitk"] = (estimates["simpleitk"][0], time.perf_counter() - start)
        if with_elastix:
            estimates["elastix"] = elastix_pet_to_ct(ct, pet)
        if with_ants:
            estimates["antspy"] = ants_pet_to_ct(args.ants_python, ct_path, pet_path)
        for tool, (estimate, seconds) in estimates.items():
            tre = target_registration_error(estimate, truth, points)
            rotation = rotation_error_deg(estimate, truth)
            rows.append((tool, seconds, tre.mean(), tre.max(), rotation))
            print(
                f"{subject:8} {tool:10} {seconds:7.2f} {tre.mean():9.3f} {tre.max():8.3f} "
                f"{rotation:8.3f}",
                flush=True,
            )
    print("\nmedians over subjects (ratio = tool / simpleitk)")
    base = {i: statistics.median(r[i] for r in rows if r[0] == "simpleitk") for i in (1, 2, 3)}
    for tool in dict.fromkeys(r[0] for r in rows):
        med = {i: statistics.median(r[i] for r in rows if r[0] == tool) for i in (1, 2, 3)}
        worst = max(r[3] for r in rows if r[0] == tool)
        print(
            f"{tool:10} time {med[1]:6.2f} s (x{med[1] / base[1]:.2f})  "
            f"TRE mean {med[2]:.3f} mm (x{med[2] / base[2]:.2f})  worst max TRE {worst:.3f} mm"
        )
    if not with_elastix:
        print("elastix skipped: not on PATH (Debian: apt-get install elastix)")
    if not with_ants:
        print(f"ANTsPy skipped: {args.ants_python} not found (see the module docstring)")


if __name__ == "__main__":
    main()
