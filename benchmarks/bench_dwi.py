"""Seconds per diffusion step for one demo subject, and the wrapper's overhead.

    .venv/bin/python benchmarks/bench_dwi.py [--config '{"motion": {"iterations": 2}}']

Prints the seconds each nipype node ran, the whole workflow, and the ratio of the
pipeline's tensor-fit step (nipype node: read files, fit, write maps) to a direct dipy
TensorModel fit of the same data (in memory). One thread (OPENBLAS_NUM_THREADS=1).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from neuroadapt.demo import generate_cohort  # noqa: E402
from neuroadapt.dwi import gradients, mask, tensor  # noqa: E402
from neuroadapt.dwi.pipeline import OUTPUT_KEYS, process_subject  # noqa: E402
from neuroadapt.dwi.settings import MaskSettings, settings_from_config  # noqa: E402

DEMO_CONFIG = {"motion": {"iterations": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=json.dumps(DEMO_CONFIG), help="dwi section (JSON)")
    args = parser.parse_args()
    settings = settings_from_config(json.loads(args.config))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        bids, truth = root / "bids", root / "truth"
        generate_cohort({"kind": "dwi", "n_subjects": 4, "n_sites": 1}, bids, truth, "bench")
        stem = bids / "sub-1" / "dwi" / "sub-1_dwi"
        if not stem.with_suffix(".nii.gz").parent.exists():
            stem = next(bids.glob("sub-*/dwi/*_dwi.nii.gz"))
            stem = Path(str(stem).removesuffix(".nii.gz"))
        paths = [f"{stem}.nii.gz", f"{stem}.bval", f"{stem}.bvec"]
        outputs = {key: str(root / "out" / f"{key}.out") for key in OUTPUT_KEYS}
        for key in ("preproc", "b0", "mask", "fa", "md", "ad", "rd", "rgb", "model_nii"):
            outputs[key] = str(root / "out" / f"{key}.nii.gz")
        for key in ("tensor_figure", "motion_figure"):
            outputs[key] = str(root / "out" / f"{key}.png")
        started = time.perf_counter()
        summary = process_subject(*paths, [], settings, outputs, "bench")
        end_to_end = time.perf_counter() - started

        series = gradients.to_ras(gradients.load_dwi(*paths))
        brain = mask.brain_mask(mask.b0_reference(series.data, series.b0_mask()), MaskSettings())
        direct = []
        for _ in range(3):
            started = time.perf_counter()
            tensor.fit_tensor(series.data, series.bvals, series.bvecs_voxel, brain, settings.tensor)
            direct.append(time.perf_counter() - started)
    print(f"demo subject {series.data.shape}, settings {args.config}")
    for step, seconds in summary["timings"].items():
        print(f"  {step:<16} {seconds:8.2f} s")
    print(f"  {'end to end':<16} {end_to_end:8.2f} s (with checks, QC, figures, outputs)")
    fit_direct = float(np.median(direct))
    print(f"tensor step {summary['timings']['tensor']:.3f} s vs direct dipy fit {fit_direct:.3f} s")
    print(
        f"wrapper overhead ratio (pipeline tensor step / direct): "
        f"{summary['timings']['tensor'] / fit_direct:.2f}"
    )
    nodes = sum(v for k, v in summary["timings"].items() if k != "workflow_total")
    print(
        f"nipype overhead: workflow {summary['timings']['workflow_total']:.2f} s, "
        f"nodes {nodes:.2f} s, engine {summary['timings']['workflow_total'] - nodes:.2f} s"
    )


if __name__ == "__main__":
    main()
