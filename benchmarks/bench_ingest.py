"""Ingestion time per subject for BIDS trees of 100 and 1,000 subjects.

The trees are made from one generated subject (tiny DWI + T1w with sidecars), hard-linked
under new subject IDs, so building them is cheap and every subject costs ingestion the
same. Prints the time per subject for each size and their ratio: a ratio near 1 means the
cost grows linearly with the number of subjects.

    .venv/bin/python benchmarks/bench_ingest.py [--sizes 100 1000] [--no-data-check]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from neuroadapt.bids import ingest
from neuroadapt.demo import generate_cohort
from neuroadapt.demo.dwi import TINY

TEMPLATE = {"kind": "dwi", **TINY}


def make_tree(template: Path, root: Path, n_subjects: int) -> Path:
    """A BIDS tree of ``n_subjects`` copies (hard links) of the template's sub-001."""
    root.mkdir(parents=True)
    shutil.copy(template / "dataset_description.json", root)
    source = template / "sub-001"
    rows = []
    for index in range(n_subjects):
        label = f"{index + 1:05d}"
        for path in source.rglob("*"):
            if path.is_file():
                target = root / f"sub-{label}" / path.relative_to(source)
                target = target.with_name(target.name.replace("sub-001", f"sub-{label}"))
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
        rows.append(
            {
                "participant_id": f"sub-{label}",
                "age": 10 + index % 7,
                "diagnosis": "ADHD" if index % 2 else "TD",
            }
        )
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--no-data-check",
        action="store_true",
        help="skip the full read of every image (check_image_data: false)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        generate_cohort(TEMPLATE, scratch / "template", scratch / "truth", where="benchmark")
        per_subject = {}
        for n in args.sizes:
            tree = make_tree(scratch / "template", scratch / f"tree{n}", n)
            start = time.perf_counter()
            result = ingest(
                tree,
                required=["dwi", "t1w"],
                label="diagnosis",
                covariates=["age"],
                check_image_data=not args.no_data_check,
            )
            elapsed = time.perf_counter() - start
            assert len(result.table) == n
            per_subject[n] = elapsed / n
            print(
                f"{n:>6} subjects: {elapsed:8.2f} s total, {1000 * per_subject[n]:7.2f} ms/subject"
            )
        sizes = sorted(per_subject)
        for small, large in zip(sizes, sizes[1:], strict=False):
            ratio = per_subject[large] / per_subject[small]
            print(f"per-subject cost {large} vs {small} subjects: {ratio:.2f}x (1.00 = linear)")


if __name__ == "__main__":
    main()
