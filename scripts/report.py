"""Rule report: render results/report/index.html."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.report.html import build_report

with logged(snakemake.log) as log:
    build_report(
        dict(snakemake.params.config),
        snakemake.params.layout,
        snakemake.output[0],
        template=snakemake.input.template,
    )
    log.info("wrote %s", snakemake.output[0])
