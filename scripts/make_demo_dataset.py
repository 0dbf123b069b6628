"""Rule demo_dataset: generate one synthetic BIDS dataset and its ground truth."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.demo import generate_cohort
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    dataset = snakemake.wildcards.dataset
    log.info("generating %s with %s", dataset, snakemake.params.synthetic)
    generate_cohort(
        snakemake.params.synthetic,
        Path(snakemake.output.bids),
        Path(snakemake.output.truth),
        where=f"datasets.{dataset}.synthetic",
    )
