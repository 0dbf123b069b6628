"""Rule dwi: QSIPrep-style preprocessing and tensor fit of one subject's DWI series."""

import os
import sys
from pathlib import Path

# dipy steps are single-threaded by design: OpenBLAS threads slow MP-PCA down (facts.md).
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(snakemake.threads)
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.dwi.pipeline import output_keys, process_subject
from neuroadapt.dwi.settings import settings_from_config
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    settings = settings_from_config(snakemake.params.settings)
    summary = process_subject(
        dwi=snakemake.input.dwi,
        bval=snakemake.input.bval,
        bvec=snakemake.input.bvec,
        sidecars=snakemake.params.sidecars,
        settings=settings,
        outputs={key: snakemake.output[key] for key in output_keys(settings)},
        subject=snakemake.wildcards.prefix,
        work_root=snakemake.resources.get("tmpdir"),
        mask=snakemake.input.get("mask"),  # QSIPrep's, when it preprocessed the series
    )
    log.info("%s: seconds per step %s", snakemake.wildcards.prefix, summary["timings"])
    log.info("%s: image QC %s", snakemake.wildcards.prefix, summary["qc"])
    if "template" in summary:
        log.info("%s: template registration %s", snakemake.wildcards.prefix, summary["template"])
