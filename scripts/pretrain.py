"""Rule pretrain: CT-pretrain a demo-size backbone on a CT cohort (a UNETR segments the GTV
on the CT/PET stage's box, other backbones classify lesion present/absent)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.pretrain import crop_settings, pretrain_backbone, pretrain_settings

with logged(snakemake.log) as log:
    # params.crop: petct.crop for a UNETR, None for the others (see pretrain_crop_section)
    crop = getattr(snakemake.params, "crop", None)
    sidecar = pretrain_backbone(
        subjects_table=snakemake.input.table,
        backbone_name=snakemake.wildcards.backbone,
        label_column=snakemake.params.label,
        settings=pretrain_settings(snakemake.params.settings),
        weights_out=snakemake.output.weights,
        sidecar_out=snakemake.output.sidecar,
        threads=snakemake.threads,
        crop=None if crop is None else crop_settings(crop),
    )
    log.info("pretrained %s: last epoch %s", snakemake.wildcards.backbone, sidecar["history"][-1])
    if sidecar["task"] == "segmentation":
        log.info(
            "training Dice %.3f before, %.3f after (%s scans, %s with a GTV, img_size %s)",
            sidecar["initial_training_dice"],
            sidecar["final_training_dice"],
            sidecar["n_scans"],
            sidecar["n_scans_with_gtv"],
            sidecar["img_size"],
        )
