"""Rule interpret: attribution maps of one trained run for its fold's test part."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.interpret import interpret_run
from neuroadapt.logs import logged
from neuroadapt.pretrain import with_pretrained_weights

with logged(snakemake.log) as log:
    backbone = with_pretrained_weights(snakemake.params.backbone, snakemake.input)
    fold = int(snakemake.wildcards.fold)
    given = snakemake.input.keys()
    scores = interpret_run(
        experiment=snakemake.params.experiment,
        method_name=snakemake.wildcards.method,
        backbone=backbone,
        fold=fold,
        subjects_table=snakemake.input.table,
        fold_table=f"{snakemake.input.splits}/fold-{fold}.tsv",
        tensors=list(snakemake.input.tensors),
        masks=list(snakemake.input.masks) if "masks" in given else None,
        phase1_runs=list(snakemake.input.phase1) if "phase1" in given else None,
        run_dir=snakemake.input.run,
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
        truth_dir=snakemake.input.truth if "truth" in given else None,
        source_maps=list(snakemake.input.source_maps) if "source_maps" in given else None,
        space=snakemake.params.space,
        threads=snakemake.threads,
    )
    scored = scores.dropna(subset=["enrichment"])
    log.info(
        "%s fold %d: %d attributions, %d scored against a planted region, mean enrichment %s",
        snakemake.wildcards.method,
        fold,
        len(scores),
        len(scored),
        scored.groupby("attribution").enrichment.mean().round(2).to_dict(),
    )
