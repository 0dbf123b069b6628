# Shared set-up: make the package importable, validate the config, helpers for rules.
import os
import re
import sys

sys.path.insert(0, workflow.basedir)

from neuroadapt.subjects import (
    cached_row,
    cached_subjects_table,
    row_folder,
    row_prefix,
)
from neuroadapt.config import (
    DEMO_ROOT,
    DIFFUSION_MAPS,
    check_weight_files,
    dataset_dir,
    required_columns,
    required_modalities,
    validate_config,
)
from neuroadapt.experiments import (
    backbone_config,
    experiment_methods,
    image_kind,
    phase1_modalities,
    trained_experiments,
    UNIMODAL_PREFIX,
)
from neuroadapt.attribution import merged_interpret
from neuroadapt.method_cards import method_cards
from neuroadapt.train_settings import merged_training

validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
if workflow.is_main_process:  # once per run, not again in every (cluster) job
    check_weight_files(config)

DATASETS = list(config["datasets"])
EXPERIMENTS = list(config["experiments"])
SYNTHETIC = [name for name, d in config["datasets"].items() if d.get("synthetic")]
DICOM = [name for name, d in config["datasets"].items() if "dicom_dir" in d]


wildcard_constraints:
    dataset="|".join(DATASETS),


def one_of(names):
    """Regex matching exactly one of ``names`` (nothing when the list is empty)."""
    return "|".join(names) if names else "(?!)"


def ingest_inputs(wildcards):
    """A synthetic dataset comes from the demo rule, a DICOM one from the dicom rule; a real
    one is read where it is (its folder and participants.tsv: adding a subject or changing a
    label reruns ingestion).
    """
    root = dataset_dir(config, wildcards.dataset)
    if wildcards.dataset in SYNTHETIC or wildcards.dataset in DICOM:
        return {"bids": root}
    participants = os.path.join(root, "participants.tsv")
    if not os.path.isfile(
        participants
    ):  # BIDS only recommends it: ingestion says if it is needed
        return {"bids": root}
    return {"bids": root, "participants": participants}


def dicom_inputs(wildcards):
    """The DICOM folder, the mapping and the participants table when given: a new
    participant folder, a changed mapping or a changed label reruns the conversion."""
    dataset = config["datasets"][wildcards.dataset]
    inputs = {"dicom": dataset["dicom_dir"], "mapping": dataset["dicom_mapping"]}
    if "dicom_participants" in dataset:
        inputs["participants"] = dataset["dicom_participants"]
    return inputs


def subjects_table(experiment):
    """subjects.tsv of the dataset an experiment uses."""
    return f"results/{config['experiments'][experiment]['dataset']}/subjects.tsv"


def ingest_outputs():
    return expand(
        "results/{dataset}/{name}",
        dataset=DATASETS,
        name=["subjects.tsv", "validation.json"],
    )


def split_outputs():
    return expand("results/{experiment}/splits", experiment=EXPERIMENTS)


# Per-subject rules: their jobs come from subjects.tsv (the ingest checkpoint), one job per
# row, and each job's inputs are that row's own files, so a changed subject reruns only its
# own chain. Wildcards: {dataset}, {folder} (sub-01 or sub-01/ses-02), {prefix}
# (sub-01 or sub-01_ses-02).


wildcard_constraints:
    folder="sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",
    prefix="sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?",


def ingested(dataset):
    """subjects.tsv of ``dataset`` as a table, once the ingest checkpoint has run."""
    return cached_subjects_table(checkpoints.ingest.get(dataset=dataset).output.table)


def ingested_row(wildcards):
    """The subjects.tsv row of a per-subject job ({dataset} and {prefix} wildcards)."""
    table = checkpoints.ingest.get(dataset=wildcards.dataset).output.table
    return cached_row(table, wildcards.prefix)


def per_row(dataset, pattern):
    """``pattern`` formatted for every row of the dataset (keys: dataset, folder, prefix)."""
    table = ingested(dataset)
    return [
        pattern.format(
            dataset=dataset, folder=row_folder(p, s), prefix=row_prefix(p, s)
        )
        for p, s in zip(table.participant_id, table.session_id)
    ]


# CT/PET (workflow/rules/petct.smk): datasets some experiment feeds both ct and pet.
PETCT_DATASETS = sorted(
    {
        e["dataset"]
        for e in config["experiments"].values()
        if {"ct", "pet"} <= set(e["inputs"])
    }
)
# Every per-subject stage writes into one BIDS-derivatives dataset per dataset.
DERIVATIVES_ROOT = "results/{dataset}/derivatives/neuroadapt"
PETCT_ROOT = DERIVATIVES_ROOT
PETCT_TENSOR = "results/{dataset}/derivatives/neuroadapt/{folder}/tensors/{prefix}_space-box_desc-ctpet_tensor.npy"
PETCT_MASK = "results/{dataset}/derivatives/neuroadapt/{folder}/tensors/{prefix}_space-box_label-GTV_mask.npy"


def petct_inputs(wildcards):
    """The row's CT, PET (+ sidecars) and GTV mask when it has one."""
    from neuroadapt.petct.pipeline import check_pair

    row = ingested_row(wildcards)
    ct, pet = row.get("ct"), row.get("pet")
    check_pair(
        ct if isinstance(ct, str) else None, pet if isinstance(pet, str) else None
    )
    inputs = {"ct": ct, "pet": pet, "sidecars": pet_sidecars(wildcards)}
    if isinstance(row.get("gtv"), str):
        inputs["gtv"] = row["gtv"]
    return inputs


def pet_sidecars(wildcards):
    sidecars = ingested_row(wildcards).get("pet_sidecars")
    return sidecars.split(";") if isinstance(sidecars, str) else []


def petct_outputs(wildcards):
    """Every PET/CT subject's tensors and each dataset's description (an input function:
    the rows come from the ingest checkpoint)."""
    return [
        path
        for dataset in PETCT_DATASETS
        for path in [
            f"{PETCT_ROOT.format(dataset=dataset)}/dataset_description.json",
            *per_row(dataset, PETCT_TENSOR),
        ]
    ]


# Diffusion (workflow/rules/dwi.smk): datasets some experiment feeds a tensor map.
DWI_DATASETS = sorted(
    {
        e["dataset"]
        for e in config["experiments"].values()
        if DIFFUSION_MAPS & set(e["inputs"])
    }
)
DWI_ROOT = DERIVATIVES_ROOT
DWI_DIR = "results/{dataset}/derivatives/neuroadapt/{folder}/dwi"
DWI_TENSOR = "results/{dataset}/derivatives/neuroadapt/{folder}/tensors/{prefix}_space-box_desc-famd_tensor.npy"


def dwi_inputs(wildcards):
    """The row's DWI series with its .bval/.bvec, and its brain mask when QSIPrep already
    preprocessed the series (datasets.<name>.qsiprep_dir)."""
    row = ingested_row(wildcards)
    inputs = {"dwi": row["dwi"], "bval": row["dwi_bval"], "bvec": row["dwi_bvec"]}
    if isinstance(row.get("dwi_mask"), str):
        inputs["mask"] = row["dwi_mask"]
    return inputs


def dwi_sidecars(wildcards):
    sidecars = ingested_row(wildcards).get("dwi_sidecars")
    return sidecars.split(";") if isinstance(sidecars, str) else []


def dwi_outputs(wildcards):
    """Every DWI subject's model-ready tensors (the rule's other outputs come with them)
    and each dataset's description (an input function: rows come from the ingest checkpoint).
    """
    return [
        path
        for dataset in DWI_DATASETS
        for path in [
            f"{DWI_ROOT.format(dataset=dataset)}/dataset_description.json",
            *per_row(dataset, DWI_TENSOR),
        ]
    ]


# Training and evaluation (workflow/rules/train.smk, evaluate.smk): experiments with methods.
TRAINED_EXPERIMENTS = trained_experiments(config)
TRAINED_METHODS = sorted(
    {
        m
        for e in TRAINED_EXPERIMENTS
        for m in experiment_methods(config["experiments"][e])
    }
)
RUN_DIR = "results/{experiment}/{method}/fold-{fold}"
PRETRAINED_WEIGHTS = "results/pretrain/{dataset}/{backbone}.pt"
PRETRAINED_SIDECAR = "results/pretrain/{dataset}/{backbone}.json"
PRETRAIN_DATASETS = sorted(
    {
        backbone_config(config["experiments"][e]).get("pretrained_on")
        for e in TRAINED_EXPERIMENTS
    }
    - {None}
)
TENSOR_PATTERNS = {"famd": DWI_TENSOR, "ctpet": PETCT_TENSOR}
# Weights to fetch (by download_weights), by file name: {url, sha256}.
DOWNLOADS = {
    os.path.basename(b["weights"]): {"url": b["url"], "sha256": b["sha256"]}
    for b in (backbone_config(e) for e in config["experiments"].values())
    if "url" in b
}


wildcard_constraints:
    method=one_of(TRAINED_METHODS),


def fold_count(experiment):
    """Folds of an experiment (the splits rule draws this many; 5 unless configured)."""
    return int((config["experiments"][experiment].get("splits") or {}).get("folds", 5))


def train_inputs(wildcards):
    """subjects.tsv, the splits, every row's model-ready tensor, and the backbone's weights
    (with the pretrain rule's sidecar, which holds their checksum)."""
    experiment = config["experiments"][wildcards.experiment]
    dataset = experiment["dataset"]
    pattern = TENSOR_PATTERNS[image_kind(experiment["inputs"], wildcards.experiment)]
    inputs = {
        "table": f"results/{dataset}/subjects.tsv",
        "splits": f"results/{wildcards.experiment}/splits",
        "tensors": per_row(dataset, pattern),
    }
    if "segmentation" in experiment["task"]:
        inputs["masks"] = per_row(dataset, PETCT_MASK)
    backbone = backbone_config(experiment)
    if "pretrained_on" in backbone:
        names = {"dataset": backbone["pretrained_on"], "backbone": backbone["name"]}
        inputs["weights"] = PRETRAINED_WEIGHTS.format(**names)
        inputs["weights_sidecar"] = PRETRAINED_SIDECAR.format(**names)
    elif "weights" in backbone:
        inputs["weights"] = backbone["weights"]
    method = getattr(wildcards, "method", None)  # rank_sweep's job has none
    if method is not None and method_cards()[method].uses_phase1:
        # paper 4's phase 2 reads the frozen phase-1 models of the same fold
        inputs["phase1"] = [
            RUN_DIR.format(
                experiment=wildcards.experiment,
                method=f"{UNIMODAL_PREFIX}{modality}",
                fold=wildcards.fold,
            )
            for modality in phase1_modalities(experiment)
        ]
    return inputs


def experiment_for_training(experiment):
    """The keys of an experiment a train job depends on (not its methods list: adding a
    method must not rerun the others)."""
    keys = (
        "dataset",
        "inputs",
        "target",
        "task",
        "positive_class",
        "survival",
        "text_encoder",
    )
    entry = config["experiments"][experiment]
    return {key: entry[key] for key in keys if key in entry}


def training_section(experiment):
    return merged_training(config, experiment)


def backbone_spec(experiment):
    return backbone_config(config["experiments"][experiment])


def run_dirs(experiment):
    """Every training run (method x fold) of an experiment."""
    return expand(
        RUN_DIR,
        experiment=experiment,
        method=experiment_methods(config["experiments"][experiment]),
        fold=range(1, fold_count(experiment) + 1),
    )


def evaluate_outputs():
    return expand("results/{experiment}/metrics.tsv", experiment=TRAINED_EXPERIMENTS)


# Report (workflow/rules/report.smk): everything it shows, by section.
REPORT_TEMPLATE = config["report"].get(
    "template", f"{workflow.basedir}/neuroadapt/report/templates/report.html"
)


def report_layout(wildcards):
    """Paths the report reads, by section (a params function: the per-subject files come
    from the ingest checkpoints)."""
    layout = {
        "datasets": {d: {"subjects": f"results/{d}/subjects.tsv"} for d in DATASETS},
        "dwi_qc": {
            d: {
                "tables": per_row(d, f"{DWI_DIR}/{{prefix}}_desc-imageqc_dwi.tsv"),
                "figures": per_row(
                    d,
                    f"{DWI_ROOT}/{{folder}}/figures/{{prefix}}_desc-tensor_dwimap.png",
                ),
                "motion": per_row(
                    d,
                    f"{DWI_ROOT}/{{folder}}/figures/{{prefix}}_desc-motion_dwi.png",
                ),
            }
            for d in DWI_DATASETS
        },
        "petct_qc": {
            d: {
                "tables": per_row(
                    d,
                    f"{PETCT_ROOT}/{{folder}}/xfm/{{prefix}}_from-pet_to-ct_mode-image_xfm.json",
                ),
                "figures": per_row(
                    d,
                    f"{PETCT_ROOT}/{{folder}}/figures/{{prefix}}_desc-registration_petct.png",
                ),
            }
            for d in PETCT_DATASETS
        },
        "experiments": {},
    }
    for name in EXPERIMENTS:
        paths = {"splits": f"results/{name}/splits"}
        if name in TRAINED_EXPERIMENTS:
            for key in (
                "metrics",
                "folds",
                "predictions",
                "resources",
                "missing_modality",
            ):
                paths[key] = f"results/{name}/{key}.tsv"
            paths["runs"] = [f"{run}/run.json" for run in run_dirs(name)]
            if interpreted(name):
                paths["attribution"] = f"results/{name}/attribution.tsv"
                paths["attribution_maps"] = f"results/{name}/attribution_maps.npz"
        layout["experiments"][name] = paths
    return layout


def report_inputs(wildcards):
    """Every file of the layout, as one list (so each is a dependency of the report)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        # a run.json lies in a run folder: the folder is the train job's output
        elif os.path.basename(node) != "run.json":
            found.append(node)

    walk(report_layout(wildcards))
    return found + [run for name in TRAINED_EXPERIMENTS for run in run_dirs(name)]


# Interpretation (workflow/rules/interpret.smk): attribution maps per run, gathered per experiment.

ATTRIBUTION_DIR = "results/{experiment}/attribution/{method}/fold-{fold}"
# The grid the diffusion tensors were resampled from: the subject's DWI space, or the template.
DWI_TENSOR_SPACE = config["dwi"].get("model_ready", {}).get("space", "dwi")


def dwi_source_fa():
    """The FA map each diffusion tensor was made from (pattern; dwi.smk names the outputs)."""
    if DWI_TENSOR_SPACE == "template":
        return DWI_TEMPLATE_OUTPUTS["template_fa"]
    return f"{DWI_DIR}/{{prefix}}_space-dwi_model-tensor_param-fa_dwimap.nii.gz"


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
        inputs["source_maps"] = per_row(dataset, dwi_source_fa())
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
