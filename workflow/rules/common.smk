# Shared set-up: make the package importable, validate the config, helpers for rules.
import sys

sys.path.insert(0, workflow.basedir)

from neuroadapt.config import (
    DEMO_ROOT,
    dataset_dir,
    required_columns,
    required_modalities,
    validate_config,
)

validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

DATASETS = list(config["datasets"])
EXPERIMENTS = list(config["experiments"])
SYNTHETIC = [name for name, d in config["datasets"].items() if d.get("synthetic")]


wildcard_constraints:
    dataset="|".join(DATASETS),


def one_of(names):
    """Regex matching exactly one of ``names`` (nothing when the list is empty)."""
    return "|".join(names) if names else "(?!)"


def ingest_inputs(wildcards):
    """A synthetic dataset comes from the demo rule; a real one is read where it is
    (its folder and participants.tsv: adding a subject or changing a label reruns ingestion).
    """
    root = dataset_dir(config, wildcards.dataset)
    if wildcards.dataset in SYNTHETIC:
        return {"bids": root}
    return {"bids": root, "participants": f"{root}/participants.tsv"}


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
