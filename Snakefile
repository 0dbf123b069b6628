# neuroadapt: BIDS -> preprocessing -> training -> evaluation -> reports.
# Stages live in workflow/rules/; all logic lives in the neuroadapt package.
from snakemake.utils import min_version

min_version("9.27")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/dicom.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/petct.smk"
include: "workflow/rules/dwi.smk"
include: "workflow/rules/derivatives.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/interpret.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        ingest_outputs(),
        split_outputs(),
        petct_outputs,
        dwi_outputs,
        evaluate_outputs(),
        attribution_outputs(),
        "results/report/index.html",
