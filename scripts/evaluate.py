"""Rule evaluate: out-of-fold metrics, intervals and comparisons of an experiment's methods."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.evaluate import evaluate_experiment
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    metrics = evaluate_experiment(
        snakemake.wildcards.experiment,
        snakemake.params.experiment,
        snakemake.input.runs,
        snakemake.params.evaluation,
        {
            key: snakemake.output[key]
            for key in (
                "predictions",
                "folds",
                "metrics",
                "resources",
                "tuning",
                "missing_modality",
            )
        },
    )
    # the first pooled metric (AUC; C-index for survival) with its interval
    first = metrics.columns[3]
    log.info("\n%s", metrics[["method", "selection", "n", first, f"{first}_low", f"{first}_high"]])
