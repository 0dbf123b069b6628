# Embedded synthetic cohorts, generated only for datasets whose config has `synthetic:`.


rule demo_dataset:
    output:
        bids=directory(f"{DEMO_ROOT}/{{dataset}}"),
        truth=directory(f"{DEMO_ROOT}/ground_truth/{{dataset}}"),
    log:
        "logs/demo/{dataset}.log",
    benchmark:
        "logs/benchmarks/demo/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(SYNTHETIC),
    conda:
        "../../envs/ingest.yaml"
    params:
        synthetic=lambda wildcards: config["datasets"][wildcards.dataset]["synthetic"],
    script:
        "../../scripts/make_demo_dataset.py"
