"""Rule attribution: every run's attribution scores and group maps of one experiment."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.attribution_summary import write_attribution_outputs
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    runs = {
        method: [run for run in snakemake.input.runs if f"/attribution/{method}/fold-" in run]
        for method in snakemake.params.methods
    }
    table = write_attribution_outputs(
        runs,
        snakemake.input.metrics,
        snakemake.params.task,
        snakemake.output.table,
        snakemake.output.maps,
    )
    pooled = table[table.fold == "pooled"]
    log.info("%s", pooled[["method", "target", "attribution", "enrichment", "hit_rate"]])
