# DICOM to BIDS: datasets with dicom_dir are converted (dcm2niix + a dcm2bids mapping) into
# results/<dataset>/bids, which ingestion then reads like any BIDS dataset.


def dicom_inputs(wildcards):
    """The DICOM folder, the mapping and the participants table when given: a new
    participant folder, a changed mapping or a changed label reruns the conversion."""
    dataset = config["datasets"][wildcards.dataset]
    inputs = {"dicom": dataset["dicom_dir"], "mapping": dataset["dicom_mapping"]}
    if "dicom_participants" in dataset:
        inputs["participants"] = dataset["dicom_participants"]
    return inputs


rule dicom:
    input:
        unpack(dicom_inputs),
    output:
        bids=directory("results/{dataset}/bids"),
    log:
        "logs/dicom/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(DICOM),
    conda:
        "../../envs/dicom.yaml"
    script:
        "../../scripts/dicom.py"
