"""Rule ingest: index and check a BIDS dataset, write subjects.tsv and validation.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.bids import ingest, write_outputs
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    dataset = snakemake.params.dataset
    result = ingest(
        snakemake.params.bids_dir,
        required=snakemake.params.required,
        label=dataset.get("label"),
        covariates=dataset.get("covariates", []),
        required_columns=snakemake.params.required_columns,
        include=dataset.get("include", []),
        exclude=dataset.get("exclude", []),
        on_missing_modality=dataset.get("on_missing_modality", "drop"),
        modality_overrides=dataset.get("modalities"),
        check_image_data=dataset.get("check_image_data", True),
        qsiprep_dir=dataset.get("qsiprep_dir"),
    )
    write_outputs(result, snakemake.output.table, snakemake.output.report)
    log.info(
        "%s: %d rows kept, %d dropped",
        snakemake.wildcards.dataset,
        result.report["rows_kept"],
        len(result.report["dropped"]),
    )
