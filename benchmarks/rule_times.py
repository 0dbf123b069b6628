"""Where a workflow run's time went: one row per rule from the benchmark files every rule
writes (``logs/benchmarks/<rule>/...tsv``, Snakemake's ``benchmark:`` directive).

    .venv/bin/python benchmarks/rule_times.py            # in the folder the workflow ran in
    .venv/bin/python benchmarks/rule_times.py /path/to/run

Per rule (named by its benchmark folder: demo is demo_dataset, derivatives is
derivatives_description): jobs, total and longest job seconds, share of all job seconds,
and the largest peak resident memory (max_rss, MiB). On 2 cores the wall time is about half
the total.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def rule_table(run_dir: Path) -> pd.DataFrame:
    root = run_dir / "logs" / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rule = path.relative_to(root).parts[0]
        rows.append({"rule": rule, "s": float(table.s.iloc[-1]), "max_rss": table.max_rss.max()})
    if not rows:
        raise SystemExit(f"no benchmark files under {root}: run the workflow there first")
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(
        jobs=("s", "size"),
        total_s=("s", "sum"),
        longest_s=("s", "max"),
        peak_mib=("max_rss", "max"),
    )
    table["share"] = table.total_s / table.total_s.sum()
    return table.sort_values("total_s", ascending=False)


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    table = rule_table(run_dir)
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"\nall jobs: {table.total_s.sum():.0f} s in {table.jobs.sum()} jobs")


if __name__ == "__main__":
    main()
