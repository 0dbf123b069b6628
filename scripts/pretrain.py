"""Rule pretrain: CT-pretrain a demo-size backbone on a CT cohort."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.pretrain import pretrain_backbone, pretrain_settings

with logged(snakemake.log) as log:
    sidecar = pretrain_backbone(
        subjects_table=snakemake.input.table,
        backbone_name=snakemake.wildcards.backbone,
        label_column=snakemake.params.label,
        settings=pretrain_settings(snakemake.params.settings),
        weights_out=snakemake.output.weights,
        sidecar_out=snakemake.output.sidecar,
        threads=snakemake.threads,
    )
    log.info("pretrained %s: last epoch %s", snakemake.wildcards.backbone, sidecar["history"][-1])
