# BIDS ingestion: one subjects.tsv (one row per subject/session) and a validation report
# per dataset. A checkpoint, so per-subject rules downstream are created from the table.


checkpoint ingest:
    input:
        unpack(ingest_inputs),
    output:
        table="results/{dataset}/subjects.tsv",
        report="results/{dataset}/validation.json",
    log:
        "logs/ingest/{dataset}.log",
    benchmark:
        "logs/benchmarks/ingest/{dataset}.tsv"
    conda:
        "../../envs/ingest.yaml"
    params:
        dataset=lambda wildcards: config["datasets"][wildcards.dataset],
        bids_dir=lambda wildcards: dataset_dir(config, wildcards.dataset),
        required=lambda wildcards: required_modalities(config, wildcards.dataset),
        required_columns=lambda wildcards: required_columns(config, wildcards.dataset),
    script:
        "../../scripts/ingest.py"
