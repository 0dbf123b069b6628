# DICOM to BIDS: datasets with dicom_dir are converted (dcm2niix + a dcm2bids mapping) into
# results/<dataset>/bids, which ingestion then reads like any BIDS dataset.


rule dicom:
    input:
        unpack(dicom_inputs),
    output:
        bids=directory("results/{dataset}/bids"),
    log:
        "logs/dicom/{dataset}.log",
    benchmark:
        "logs/benchmarks/dicom/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(DICOM),
    conda:
        "../../envs/dicom.yaml"
    script:
        "../../scripts/dicom.py"
