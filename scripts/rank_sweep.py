"""Rule rank_sweep: LoRA at rising ranks against full fine-tuning on fold 1 (a diagnostic)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.io import atomic_directory
from neuroadapt.logs import logged
from neuroadapt.pretrain import with_pretrained_weights
from neuroadapt.rank_sweep import rank_sweep

with logged(snakemake.log) as log:
    backbone = with_pretrained_weights(snakemake.params.backbone, snakemake.input)
    # one recipe for every run: tuning off (the sweep itself is the comparison)
    training = {**snakemake.params.training, "tuning": {"enabled": False}}
    with atomic_directory(snakemake.output[0]) as staging:
        table = rank_sweep(
            staging,
            None,
            snakemake.params.lora,
            snakemake.params.full_finetune,
            {
                "experiment_name": snakemake.wildcards.experiment,
                "experiment": snakemake.params.experiment,
                "training": training,
                "backbone": backbone,
                "fold": 1,
                "subjects_table": snakemake.input.table,
                "fold_table": f"{snakemake.input.splits}/fold-1.tsv",
                "tensors": list(snakemake.input.tensors),
                "threads": snakemake.threads,
                "repo_dir": snakemake.scriptdir,
                "progress": False,
            },
        )
        table.to_csv(staging / "rank_sweep.tsv", sep="\t", index=False, lineterminator="\n")
    log.info("\n%s", table.to_string(index=False))
