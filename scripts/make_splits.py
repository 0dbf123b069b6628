"""Rule splits: draw the cross-validation folds of one experiment."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.splits import split_experiment

with logged(snakemake.log) as log:
    name = snakemake.wildcards.experiment
    splits = split_experiment(
        name, snakemake.params.experiment, snakemake.input.table, snakemake.output[0]
    )
    log.info(
        "%s: %s folds of %d subjects, seed %d after %d attempt(s)",
        name,
        splits.strategy,
        len(splits.subjects),
        splits.seed_used,
        len(splits.attempts),
    )
