"""Time to split cohorts of 1,000 and 100,000 subjects into stratified folds.

Each cohort is a synthetic subjects table (binary label, age, sex, site); the split is the
default strategy (5 folds, 20% validation, age/sex balance checked). Prints the time for each
size and the cost per subject, side by side.

    .venv/bin/python benchmarks/bench_splits.py [--sizes 1000 100000] [--folds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from neuroadapt.splits import SplitSettings, class_labels, make_splits, subject_table


def cohort(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:06d}" for i in range(n)],
            "diagnosis": np.where(rng.random(n) < 0.4, "ADHD", "TD"),
            "age": np.round(rng.uniform(7, 17, n), 1).astype(str),
            "sex": np.where(rng.random(n) < 0.5, "M", "F"),
            "site": [f"site{i % 8}" for i in range(n)],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    settings = SplitSettings(folds=args.folds, p_threshold=0.05)
    per_subject = {}
    for n in args.sizes:
        rows = cohort(n)
        start = time.perf_counter()
        subjects = subject_table(rows, "diagnosis", "binary", None, settings)
        splits = make_splits(
            subjects, settings, "binary", class_labels(subjects, "diagnosis", "binary", None)
        )
        elapsed = time.perf_counter() - start
        per_subject[n] = elapsed / n
        print(
            f"{n:>7} subjects: {elapsed:8.2f} s ({1e6 * per_subject[n]:7.1f} us/subject, "
            f"{len(splits.attempts)} attempt(s))"
        )
    sizes = sorted(per_subject)
    for small, large in zip(sizes, sizes[1:], strict=False):
        ratio = per_subject[large] / per_subject[small]
        print(f"per-subject cost {large} vs {small} subjects: {ratio:.2f}x")


if __name__ == "__main__":
    main()
