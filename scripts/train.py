"""Rule train: fit one method on one fold, select models, predict the fold's test part."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.train import run_training

with logged(snakemake.log) as log:
    backbone = dict(snakemake.params.backbone)
    if "weights_sidecar" in snakemake.input.keys():  # weights of the pretrain rule
        backbone["weights"] = snakemake.input.weights
        backbone["sha256"] = json.loads(Path(snakemake.input.weights_sidecar).read_text())["sha256"]
    fold = int(snakemake.wildcards.fold)
    summary = run_training(
        experiment_name=snakemake.wildcards.experiment,
        experiment=snakemake.params.experiment,
        method_name=snakemake.wildcards.method,
        method_settings=snakemake.params.method_settings,
        training=snakemake.params.training,
        backbone=backbone,
        fold=fold,
        subjects_table=snakemake.input.table,
        fold_table=f"{snakemake.input.splits}/fold-{fold}.tsv",
        tensors=list(snakemake.input.tensors),
        masks=list(snakemake.input.masks) if "masks" in snakemake.input.keys() else None,
        out_dir=snakemake.output[0],
        resume_path=snakemake.params.resume,
        tensorboard_dir=snakemake.params.tensorboard,
        phase1_runs=list(snakemake.input.phase1) if "phase1" in snakemake.input.keys() else None,
        threads=snakemake.threads,
        repo_dir=snakemake.scriptdir,
    )
    log.info(
        "%s fold %d: %d epochs on %s, %.2f s/epoch, selected %s, %s",
        snakemake.wildcards.method,
        fold,
        summary["epochs_run"],
        summary["device"],
        summary["seconds_per_epoch"],
        summary["selected"],
        summary["parameters"],
    )
