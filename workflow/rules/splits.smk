# Cohort splitting: subject-level stratified folds per experiment, leakage-checked.


rule splits:
    input:
        table=lambda wildcards: subjects_table(wildcards.experiment),
    output:
        directory("results/{experiment}/splits"),
    log:
        "logs/splits/{experiment}.log",
    benchmark:
        "logs/benchmarks/splits/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(EXPERIMENTS),
    conda:
        "../../envs/splits.yaml"
    params:
        experiment=lambda wildcards: config["experiments"][wildcards.experiment],
    script:
        "../../scripts/make_splits.py"
