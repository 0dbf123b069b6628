# Embedded synthetic cohorts, generated only for datasets whose config has `synthetic:`.


rule demo_dataset:
    output:
        bids=directory(f"{DEMO_ROOT}/{{dataset}}"),
        truth=directory(f"{DEMO_ROOT}/ground_truth/{{dataset}}"),
    params:
        synthetic=lambda wildcards: config["datasets"][wildcards.dataset]["synthetic"],
    wildcard_constraints:
        dataset=one_of(SYNTHETIC),
    log:
        "logs/demo/{dataset}.log",
    conda:
        "../../envs/ingest.yaml"
    script:
        "../../scripts/make_demo_dataset.py"
