# The dataset-level file of the BIDS-derivatives dataset the per-subject stages (dwi,
# petct) write into, one per dataset whatever stages run on it.


rule derivatives_description:
    output:
        f"{DERIVATIVES_ROOT}/dataset_description.json",
    log:
        "logs/derivatives/{dataset}_description.log",
    benchmark:
        "logs/benchmarks/derivatives/{dataset}_description.tsv"
    wildcard_constraints:
        dataset=one_of(sorted(set(DWI_DATASETS) | set(PETCT_DATASETS))),
    conda:
        "../../envs/ingest.yaml"
    script:
        "../../scripts/derivatives_description.py"
