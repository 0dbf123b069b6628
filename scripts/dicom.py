"""Rule dicom: convert a dataset's DICOM folders to BIDS (neuroadapt.dicom)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.dicom import convert_dataset
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    summary = convert_dataset(
        snakemake.input.dicom,
        snakemake.input.mapping,
        snakemake.output.bids,
        participants_table=snakemake.input.get("participants"),
        name=snakemake.wildcards.dataset,
    )
    log.info(
        "%s: %d participant/session folders converted",
        snakemake.wildcards.dataset,
        len(summary["subjects"]),
    )
