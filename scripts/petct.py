"""Rule petct: SUV, PET-to-CT registration, resampling and tensors for one subject."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.petct.pipeline import OUTPUT_KEYS, process_subject, settings_from_config

with logged(snakemake.log) as log:
    summary = process_subject(
        ct_path=snakemake.input.ct,
        pet_path=snakemake.input.pet,
        pet_sidecars=snakemake.params.pet_sidecars,
        gtv_path=snakemake.input.get("gtv"),
        settings=settings_from_config(snakemake.params.settings),
        outputs={key: snakemake.output[key] for key in OUTPUT_KEYS},
        threads=snakemake.threads,
    )
    log.info(
        "%s: registered (MI %.4f, %d iterations), box centre %s",
        snakemake.wildcards.prefix,
        summary["registration"]["FinalMetricValue"],
        summary["registration"]["Iterations"],
        summary["box"]["BoxCentreRAS"],
    )
