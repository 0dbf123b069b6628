# Evaluation: out-of-fold metrics with bootstrap intervals and paired comparisons against the
# reference method, and the resources table, per experiment.


rule evaluate:
    input:
        runs=lambda wildcards: run_dirs(wildcards.experiment),
    output:
        predictions="results/{experiment}/predictions.tsv",
        folds="results/{experiment}/folds.tsv",
        metrics=report(
            "results/{experiment}/metrics.tsv",
            caption="../report/metrics.rst",
            category="Results",
            subcategory="{experiment}",
        ),
        resources=report(
            "results/{experiment}/resources.tsv",
            caption="../report/resources.rst",
            category="Results",
            subcategory="{experiment}",
        ),
        tuning="results/{experiment}/tuning.tsv",
        # AUC with each modality removed from a share of the test subjects (multimodal
        # methods; a header only for the others)
        missing_modality="results/{experiment}/missing_modality.tsv",
    log:
        "logs/evaluate/{experiment}.log",
    benchmark:
        "logs/benchmarks/evaluate/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(TRAINED_EXPERIMENTS),
    conda:
        "../../envs/evaluate.yaml"
    params:
        experiment=lambda wildcards: {
            key: config["experiments"][wildcards.experiment].get(key)
            for key in ("reference", "task")
        }
        | {"methods": experiment_methods(config["experiments"][wildcards.experiment])},
        evaluation=config["evaluation"],
    script:
        "../../scripts/evaluate.py"
