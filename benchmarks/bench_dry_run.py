"""Workflow planning at scale: seconds of `snakemake -n` after ingestion as the cohort grows.

    .venv/bin/python benchmarks/bench_dry_run.py                  # 100, 300 and 1,000 subjects
    .venv/bin/python benchmarks/bench_dry_run.py --sizes 100 300  # fewer

For each size it writes a BIDS dataset of tiny but valid DWI series (4x4x4, 7 volumes), a
config with one experiment of every image method (6) and 5 folds, runs ingestion and the
splits (`--until splits`), then times the dry run of the whole workflow (one per-subject
dwi job per subject, 30 train jobs, evaluation, report), and prints the seconds, the jobs
planned and the growth against the smallest size (linear growth: the seconds grow like the
subjects). `snakemake --version` is timed too: Snakemake's own start-up, which on a machine
with SLURM's client tools but no reachable controller includes about 9 s in which the SLURM
executor plugin, at import, waits for `scontrol show config`; planning is the difference.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
METHODS = ["linear_probe", "full_finetune", "scratch", "lora", "dora", "molre"]


def write_dataset(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    bvals = np.array([0, 1000, 1000, 1000, 1000, 1000, 1000])
    diagonals = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]]) / np.sqrt(2)
    bvecs = np.vstack([np.zeros(3), np.eye(3), diagonals])
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "dry-run benchmark", "BIDSVersion": "1.10.0"})
    )
    rows = ["participant_id\tdiagnosis\tage\tsex\tsite"]
    for k in range(n):
        label = f"sub-{k:05d}"
        folder = root / label / "dwi"
        folder.mkdir(parents=True)
        data = (rng.random((4, 4, 4, 7)) * 100 + 100).astype(np.int16)
        nib.save(nib.Nifti1Image(data, affine), folder / f"{label}_dwi.nii.gz")
        np.savetxt(folder / f"{label}_dwi.bval", bvals[None], fmt="%d")
        np.savetxt(folder / f"{label}_dwi.bvec", bvecs.T, fmt="%.6f")
        (folder / f"{label}_dwi.json").write_text(json.dumps({"RepetitionTime": 3.0}))
        sex, site = "MF"[k % 2], f"site{k % 3}"
        rows.append(f"{label}\t{'ADHD' if k % 4 < 2 else 'TD'}\t{20 + k % 30}\t{sex}\t{site}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")


def config(bids: Path) -> dict:
    return {
        "datasets": {
            "study": {"bids_dir": str(bids), "label": "diagnosis", "covariates": ["age", "sex"]}
        },
        "experiments": {
            "dti": {
                "dataset": "study",
                "inputs": ["fa", "md"],
                "target": "diagnosis",
                "positive_class": "ADHD",
                "task": "binary",
                "backbone": "resnet18_w05",
                "splits": {"folds": 5, "group_by": None},
                "methods": METHODS,
                "reference": "linear_probe",
            }
        },
    }


def snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(folder / "config.yaml"),
        "--replace-workflow-config",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    args = parser.parse_args()
    started = time.perf_counter()
    subprocess.run([str(SNAKEMAKE), "--version"], capture_output=True, check=True)
    startup = time.perf_counter() - started
    print(f"snakemake --version (start-up): {startup:.1f} s")
    rows = []
    for n in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-dry-run-{n}-"))
        write_dataset(folder / "bids", n)
        (folder / "config.yaml").write_text(yaml.safe_dump(config(folder / "bids")))
        snakemake(folder, "--cores", "2", "--until", "splits")
        started = time.perf_counter()
        plan = snakemake(folder, "-n", "--quiet", "rules").stdout
        seconds = time.perf_counter() - started
        total = re.search(r"^total\s+(\d+)", plan, re.MULTILINE)
        rows.append((n, seconds, int(total.group(1)) if total else -1))
        print(
            f"{n:6d} subjects: dry run {seconds:6.1f} s (planning {seconds - startup:5.1f} s), "
            f"{rows[-1][2]} jobs planned",
            flush=True,
        )
    base_n, base_s, _ = rows[0]
    for n, seconds, _ in rows[1:]:
        print(
            f"{n} vs {base_n} subjects: x{n / base_n:.1f} subjects, x{seconds / base_s:.2f} "
            f"dry-run seconds, x{(seconds - startup) / (base_s - startup):.2f} planning seconds"
        )


if __name__ == "__main__":
    main()
