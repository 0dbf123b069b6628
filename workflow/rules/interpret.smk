# Interpretation: attribution maps (Captum: integrated gradients, Grad-CAM, occlusion) of
# every trained run for its fold's test part, scored against the planted regions of the demo
# (neuroadapt/interpret.py), then gathered per experiment (neuroadapt/attribution_summary.py).
# `interpret: {enabled: false}` (top level, or an experiment's own `interpret:`) leaves both
# rules out of `all` and of the report.
from neuroadapt.attribution import merged_interpret

ATTRIBUTION_DIR = "results/{experiment}/attribution/{method}/fold-{fold}"
# The grid the diffusion tensors were resampled from: the subject's DWI space, or the template.
DWI_TENSOR_SPACE = config["dwi"].get("model_ready", {}).get("space", "dwi")
DWI_SOURCE_FA = (
    DWI_TEMPLATE_OUTPUTS.get("template_fa")
    if DWI_TENSOR_SPACE == "template"
    else f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-fa_dwimap.nii.gz"
)


def interpret_section(experiment):
    return merged_interpret(config, experiment)


def interpreted(experiment):
    return interpret_section(experiment).get("enabled", True)


def interpreted_methods(experiment):
    """The methods whose model reads the image: not the phase-1 models of non-image inputs."""
    return [
        m
        for m in experiment_methods(config["experiments"][experiment])
        if not m.startswith(UNIMODAL_PREFIX) or m == f"{UNIMODAL_PREFIX}image"
    ]


def interpret_inputs(wildcards):
    """What the run's train job read, the run itself, and for diffusion tensors their
    sidecars (grids), the maps they were made from, and the demo's ground truth."""
    run = RUN_DIR.format(
        experiment=wildcards.experiment, method=wildcards.method, fold=wildcards.fold
    )
    inputs = train_inputs(wildcards) | {"run": run}
    experiment = config["experiments"][wildcards.experiment]
    dataset = experiment["dataset"]
    if image_kind(experiment["inputs"], wildcards.experiment) == "famd":
        inputs["grids"] = [
            p.removesuffix(".npy") + ".json" for p in per_row(dataset, DWI_TENSOR)
        ]
        inputs["source_maps"] = per_row(dataset, DWI_SOURCE_FA)
        if dataset in SYNTHETIC:
            inputs["truth"] = f"{DEMO_ROOT}/ground_truth/{dataset}"
    return inputs


def interpret_dirs(experiment):
    return expand(
        ATTRIBUTION_DIR,
        experiment=experiment,
        method=interpreted_methods(experiment),
        fold=range(1, fold_count(experiment) + 1),
    )


def attribution_outputs():
    return [
        f"results/{e}/attribution.tsv" for e in TRAINED_EXPERIMENTS if interpreted(e)
    ]


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
