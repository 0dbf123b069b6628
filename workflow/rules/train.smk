# Training: published weights fetched on machines that are online (only when the config gives
# a url), CT pretraining of the demo backbones, then one job per experiment x method x fold
# (a GPU rule: the workflow profile asks for one GPU; on a machine without one it runs on the
# CPU). A killed or requeued job resumes from results/<experiment>/<method>/.resume/.


rule download_weights:
    output:
        "resources/weights/{filename}",
    log:
        "logs/download/{filename}.log",
    benchmark:
        "logs/benchmarks/download/{filename}.tsv"
    wildcard_constraints:
        filename=one_of([re.escape(name) for name in DOWNLOADS]),
    conda:
        "../../envs/ingest.yaml"
    params:
        url=lambda wildcards: DOWNLOADS[wildcards.filename]["url"],
        sha256=lambda wildcards: DOWNLOADS[wildcards.filename]["sha256"],
    script:
        "../../scripts/download_weights.py"


from neuroadapt.pretrain import pretrain_crop_section, pretrain_gtv_inputs


# A UNETR learns to segment the GTV on the CT/PET stage's box (petct.crop), so its job reads
# the masks and the box; a ResNet's job reads neither (and does not rerun when they change).
rule pretrain:
    input:
        table="results/{dataset}/subjects.tsv",
        scans=lambda wildcards: list(ingested(wildcards.dataset).ct),
        gtvs=lambda wildcards: pretrain_gtv_inputs(
            ingested(wildcards.dataset), wildcards.backbone
        ),
    output:
        weights=PRETRAINED_WEIGHTS,
        sidecar=PRETRAINED_SIDECAR,
    log:
        "logs/pretrain/{dataset}/{backbone}.log",
    benchmark:
        "logs/benchmarks/pretrain/{dataset}/{backbone}.tsv"
    wildcard_constraints:
        dataset=one_of(PRETRAIN_DATASETS),
    conda:
        "../../envs/train.yaml"
    threads: 2
    params:
        label=lambda wildcards: config["datasets"][wildcards.dataset]["label"],
        settings=config["pretrain"],
        crop=lambda wildcards: pretrain_crop_section(config, wildcards.backbone),
    script:
        "../../scripts/pretrain.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        directory(RUN_DIR),
    log:
        "logs/train/{experiment}/{method}/fold-{fold}.log",
    benchmark:
        "logs/benchmarks/train/{experiment}/{method}/fold-{fold}.tsv"
    wildcard_constraints:
        experiment=one_of(TRAINED_EXPERIMENTS),
        fold=r"\d+",
    conda:
        "../../envs/train.yaml"
    threads: 1
    params:
        experiment=lambda wildcards: experiment_for_training(wildcards.experiment),
        method_settings=lambda wildcards: config["method_settings"].get(
            wildcards.method, {}
        ),
        training=lambda wildcards: training_section(wildcards.experiment),
        backbone=lambda wildcards: backbone_spec(wildcards.experiment),
        resume="results/{experiment}/{method}/.resume/fold-{fold}.pt",
        tensorboard="results/{experiment}/tensorboard/{method}/fold-{fold}",
    script:
        "../../scripts/train.py"


# Diagnostic, not part of `all`: LoRA at rising ranks up to the layers' full rank against
# full fine-tuning on fold 1 (neuroadapt/rank_sweep.py). Run it by naming its output:
#   snakemake --cores all results/adhd_dti/diagnostics/rank_sweep
rule rank_sweep:
    input:
        unpack(train_inputs),
    output:
        directory("results/{experiment}/diagnostics/rank_sweep"),
    log:
        "logs/diagnostics/{experiment}/rank_sweep.log",
    benchmark:
        "logs/benchmarks/diagnostics/{experiment}/rank_sweep.tsv"
    wildcard_constraints:
        experiment=one_of(TRAINED_EXPERIMENTS),
    conda:
        "../../envs/train.yaml"
    threads: 2
    params:
        experiment=lambda wildcards: experiment_for_training(wildcards.experiment),
        lora=config["method_settings"].get("lora", {}),
        full_finetune=config["method_settings"].get("full_finetune", {}),
        training=lambda wildcards: training_section(wildcards.experiment),
        backbone=lambda wildcards: backbone_spec(wildcards.experiment),
    script:
        "../../scripts/rank_sweep.py"
