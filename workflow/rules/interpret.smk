# Interpretation: attribution maps (Captum: integrated gradients, Grad-CAM, occlusion) of
# every trained run for its fold's test part, scored against the planted regions of the demo
# (neuroadapt/interpret.py), then gathered per experiment (neuroadapt/attribution_summary.py).
# `interpret: {enabled: false}` (top level, or an experiment's own `interpret:`) leaves both
# rules out of `all` and of the report.


rule interpret:
    input:
        unpack(interpret_inputs),
    output:
        directory(ATTRIBUTION_DIR),
    log:
        "logs/interpret/{experiment}/{method}/fold-{fold}.log",
    benchmark:
        "logs/benchmarks/interpret/{experiment}/{method}/fold-{fold}.tsv"
    wildcard_constraints:
        experiment=one_of(TRAINED_EXPERIMENTS),
        fold=r"\d+",
    conda:
        "../../envs/train.yaml"
    threads: 1
    params:
        experiment=lambda wildcards: experiment_for_training(wildcards.experiment),
        backbone=lambda wildcards: backbone_spec(wildcards.experiment),
        settings=lambda wildcards: interpret_section(wildcards.experiment),
        space=(
            DWI_TENSOR_SPACE
            if DWI_TENSOR_SPACE == "dwi"
            else config["dwi"]["template"].get("space", "template")
        ),
    script:
        "../../scripts/interpret.py"


rule attribution:
    input:
        runs=lambda wildcards: interpret_dirs(wildcards.experiment),
        metrics="results/{experiment}/metrics.tsv",
    output:
        table=report(
            "results/{experiment}/attribution.tsv",
            caption="../report/attribution.rst",
            category="Results",
            subcategory="{experiment}",
        ),
        maps="results/{experiment}/attribution_maps.npz",
    log:
        "logs/attribution/{experiment}.log",
    benchmark:
        "logs/benchmarks/attribution/{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(TRAINED_EXPERIMENTS),
    conda:
        "../../envs/evaluate.yaml"
    params:
        methods=lambda wildcards: interpreted_methods(wildcards.experiment),
        task=lambda wildcards: config["experiments"][wildcards.experiment]["task"],
    script:
        "../../scripts/attribution.py"
