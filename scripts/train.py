"""Rule train: fit one method on one fold, select models, predict the fold's test part.

Everything runs under the guard: the processes of a data-parallel job are spawned and re-run
this file (Snakemake names it as the main module's file, without its preamble that defines
``snakemake``) as ``__mp_main__``; they must neither start training nor read ``snakemake``.
They import the package from the path this process set (spawn passes sys.path on)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

    from neuroadapt.logs import logged
    from neuroadapt.pretrain import with_pretrained_weights
    from neuroadapt.train import train_job

    with logged(snakemake.log) as log:
        backbone = with_pretrained_weights(snakemake.params.backbone, snakemake.input)
        fold = int(snakemake.wildcards.fold)
        summary = train_job(
            # one data-parallel process per GPU the rule asks for (resources: gpu)
            processes=int(snakemake.resources.get("gpu", 1) or 1),
            log_file=snakemake.log[0] if snakemake.log else None,
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
            phase1_runs=list(snakemake.input.phase1)
            if "phase1" in snakemake.input.keys()
            else None,
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
