"""Loading and checking the workflow configuration.

The JSON schema (``workflow/schemas/config.schema.yaml``) says what keys and values are
allowed; this module turns schema violations into messages that name the key and the fix,
fills defaults (``snakemake.utils.validate``) and checks what a schema cannot express:
experiments that name unknown datasets, synthetic generator parameters, name clashes.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

from neuroadapt.attribution import interpret_settings, merged_interpret
from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import (
    BACKBONE_KINDS,
    NON_IMAGE_INPUTS,
    PAPER_BACKBONES,
    backbone_config,
    image_kind,
    reference_method,
    trained_experiments,
)
from neuroadapt.method_cards import cards_of_family, method_cards

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
DEMO_ROOT = "resources/demo"
# Folder names under results/ that datasets and experiments must not take.
RESERVED_NAMES = {"report", "derivatives", "logs"}

# Where each model input comes from: the raw modality ingestion must find for it.
INPUT_MODALITY = {
    "fa": "dwi",
    "md": "dwi",
    "ad": "dwi",
    "rd": "dwi",
    "t1w": "t1w",
    "ct": "ct",
    "pet": "pet",
    "gtv": "gtv",
    "report_text": "report",
    "clinical": "clinical",
    "genetics": "genetics",
}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema, with the method names every methods list and method_settings
    allows taken from the method cards (so a new method module needs no schema edit)."""
    with open(path) as handle:
        schema = yaml.safe_load(handle)
    methods = {"enum": sorted(method_cards())}
    schema["properties"]["method_settings"]["propertyNames"] = methods
    schema["$defs"]["experiment"]["properties"]["methods"]["items"] = methods
    return schema


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> ConfigError:
    """A schema violation as a ConfigError naming the key and the fix."""
    key = _key(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = sorted(schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        name = unexpected[0] if unexpected else "?"
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return ConfigError(
            _key([*error.absolute_path, name]),
            "is not a known key",
            f"{hint}allowed keys here: {', '.join(allowed)}",
        )
    if error.validator == "required":
        return ConfigError(key, error.message, f"add it ({_hint(schema, error)})")
    if error.validator == "enum":
        return ConfigError(
            key,
            f"{error.instance!r} is not allowed",
            f"use one of: {', '.join(map(str, error.validator_value))}",
        )
    description = schema.get("description")
    fix = f"expected {description}" if description else f"see {SCHEMA_PATH.name}"
    return ConfigError(key, error.message, fix)


def _hint(schema: Mapping, error: jsonschema.ValidationError) -> str:
    missing = error.message.split("'")[1] if "'" in error.message else ""
    description = schema.get("properties", {}).get(missing, {}).get("description")
    return description or "see the schema"


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` in place, fill defaults and return it.

    Raises ConfigError (naming the key and the fix) on the first problem found.
    """
    schema = load_schema(schema_path)
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise _describe(jsonschema.exceptions.best_match(errors))
    # Fill defaults the way Snakemake does (validate sets them on the mapping).
    from snakemake.utils import validate

    validate(config, str(schema_path), set_default=True)
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    from neuroadapt.demo import parse_spec
    from neuroadapt.spec import spec_from_mapping

    datasets = config["datasets"]
    experiments = config["experiments"]
    for name in [*datasets, *experiments]:
        if name in RESERVED_NAMES:
            raise ConfigError(name, "is a reserved results folder name", "rename it")
    for name in set(datasets) & set(experiments):
        raise ConfigError(
            f"experiments.{name}",
            f"has the same name as dataset '{name}' (both write results/{name}/)",
            "rename the experiment or the dataset",
        )
    for name, dataset in datasets.items():
        synthetic = dataset.get("synthetic")
        if synthetic is not None:
            default_dir = f"{DEMO_ROOT}/{name}"
            if dataset.setdefault("bids_dir", default_dir) != default_dir:
                raise ConfigError(
                    f"datasets.{name}.bids_dir",
                    f"a synthetic dataset is always written to {default_dir}",
                    "remove bids_dir, or remove synthetic to read a real dataset",
                )
            parse_spec(synthetic, f"datasets.{name}.synthetic")
            if "dicom_dir" in dataset:
                raise ConfigError(
                    f"datasets.{name}.dicom_dir",
                    "a synthetic dataset is generated, not converted from DICOM",
                    "remove dicom_dir, or remove synthetic to convert a real dataset",
                )
        elif "dicom_dir" in dataset:
            if "bids_dir" in dataset:
                raise ConfigError(
                    f"datasets.{name}.bids_dir",
                    "a dataset converted from DICOM is always written to "
                    f"{converted_bids_dir(name)}",
                    "remove bids_dir to convert dicom_dir, or dicom_dir to read bids_dir",
                )
            if "dicom_mapping" not in dataset:
                raise ConfigError(
                    f"datasets.{name}.dicom_mapping",
                    "is missing (the mapping from DICOM series to BIDS names)",
                    "give the path of a dcm2bids configuration file (JSON with 'descriptions')",
                )
        elif "bids_dir" not in dataset:
            raise ConfigError(
                f"datasets.{name}.bids_dir",
                "is missing",
                "give the path of the BIDS dataset root, dicom_dir and dicom_mapping to convert "
                "DICOM, or synthetic: {kind: dwi} for demo data",
            )
        else:
            for key in ("dicom_mapping", "dicom_participants"):
                if key in dataset:
                    raise ConfigError(
                        f"datasets.{name}.{key}",
                        "only applies to a dataset converted from DICOM",
                        f"remove {key}, or give dicom_dir instead of bids_dir",
                    )
    for name, experiment in experiments.items():
        where = f"experiments.{name}"
        if experiment["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset",
                f"names unknown dataset '{experiment['dataset']}'",
                f"use one of: {', '.join(datasets)}",
            )
        task = experiment["task"]
        if (task == "multilabel") != isinstance(experiment["target"], list):
            raise ConfigError(
                f"{where}.target",
                "a multilabel task needs a list of 0/1 columns, other tasks one column",
                "use target: [label_a, label_b] with task: multilabel, or a single column name",
            )
        from neuroadapt.splits import SplitSettings

        spec_from_mapping(SplitSettings, experiment.get("splits"), f"{where}.splits")
        if "survival" in task and "survival" not in experiment:
            raise ConfigError(
                f"{where}.survival",
                f"task '{task}' needs the survival columns",
                "add survival: {time: <column>, event: <column>}",
            )
        if "segmentation" in task and experiment["target"] != "gtv":
            raise ConfigError(
                f"{where}.target",
                f"task '{task}' segments a mask, not '{experiment['target']}'",
                "set target: gtv",
            )
        if experiment["target"] == "gtv" and "segmentation" not in task:
            raise ConfigError(
                f"{where}.task",
                "target gtv is a segmentation mask",
                "use task: segmentation or segmentation+survival",
            )
    for section in ("training", "method_settings", "pretrain", "evaluation", "report", "interpret"):
        config.setdefault(section, {})
    for name in config["experiments"]:  # a bad value stops the run at start-up
        interpret_settings(merged_interpret(config, name))
    for name in trained_experiments(config):
        _check_training(config, name)
    _check_diffusion(config)


def _family(task: str, non_image: list[str]) -> str:
    """The family of methods (method_cards.FAMILIES) that trains an experiment's task on its
    inputs: image methods on image inputs; multimodal ones when report text, clinical or
    genetic inputs come with the image; paper 5's on segmentation+survival."""
    if task == "segmentation+survival":
        return "segmentation_survival"
    return "multimodal" if non_image else "image"


def _trainable_summary() -> str:
    """Which methods train on which tasks and inputs, from the method cards."""
    parts = []
    for family, inputs in (
        ("image", "image inputs"),
        ("multimodal", "report_text, clinical or genetics inputs besides the image"),
        ("segmentation_survival", "CT and PET"),
    ):
        cards = cards_of_family(family)
        tasks = sorted({task for card in cards for task in card.tasks})
        names = ", ".join(card.name for card in cards)
        parts.append(f"{' or '.join(tasks)} on {inputs}: {names}")
    return "; ".join(parts)


def _check_training(config: dict, name: str) -> None:
    """What the train rule needs of an experiment that has methods, checked at start-up.
    What each method trains on, needs and takes as a backbone comes from its card."""
    from neuroadapt.train_settings import (
        merged_training,
        refuse_protocol_settings,
        training_settings,
    )

    experiment = config["experiments"][name]
    where = f"experiments.{name}"
    task = experiment["task"]
    cards = method_cards()
    trainable_tasks = sorted({t for card in cards.values() for t in card.tasks})
    if task not in trainable_tasks:
        raise ConfigError(
            f"{where}.methods",
            f"training on task '{task}' is not built yet ({' or '.join(trainable_tasks)} only)",
            "leave methods empty ([]) for this experiment",
        )
    non_image = [name for name in experiment["inputs"] if name in NON_IMAGE_INPUTS]
    if task == "multilabel" and non_image:
        raise ConfigError(
            f"{where}.inputs",
            f"multilabel training reads image inputs only, not {', '.join(non_image)}",
            "drop them from inputs (e.g. inputs: [fa, md] or [ct, pet])",
        )
    image_kind(experiment["inputs"], where)
    family = _family(task, non_image)
    other = [
        m for m in experiment["methods"] if cards[m].family != family or task not in cards[m].tasks
    ]
    if other:
        here = ", ".join(card.name for card in cards_of_family(family) if task in card.tasks)
        raise ConfigError(
            f"{where}.methods",
            f"{', '.join(other)} cannot be trained on task '{task}' with inputs "
            f"{list(experiment['inputs'])}; the train rule trains {here} there "
            f"({_trainable_summary()})",
            "leave them out of this experiment",
        )
    for method in experiment["methods"]:
        missing = [i for i in cards[method].needs_inputs if i not in experiment["inputs"]]
        if missing:
            raise ConfigError(
                f"{where}.inputs",
                f"{method} ({cards[method].paper}) reads {', '.join(missing)}",
                f"add {', '.join(missing)} to inputs",
            )
    backbone = backbone_config(experiment)
    if not backbone:
        raise ConfigError(f"{where}.backbone", "is missing", "name one, e.g. {name: resnet18_w05}")
    for kind in sorted({cards[m].backbones for m in experiment["methods"]}):
        backbones, needs = BACKBONE_KINDS[kind]
        if backbone["name"] not in backbones:
            methods = [m for m in experiment["methods"] if cards[m].backbones == kind]
            raise ConfigError(
                f"{where}.backbone.name",
                f"{backbone['name']} does not fit task '{task}': its methods "
                f"({', '.join(methods)}) need {needs}",
                f"use one of: {', '.join(sorted(backbones))}",
            )
    weightless = not ({"weights", "pretrained_on"} & set(backbone))
    if (
        weightless
        and backbone["name"] in PAPER_BACKBONES
        and not backbone.get("allow_random_weights")
    ):
        raise ConfigError(
            f"{where}.backbone",
            f"{backbone['name']} is a paper's foundation model but no weights are given: "
            "every method would adapt a randomly initialised network, and the comparison "
            "would say nothing about the paper's method",
            "give {name: ..., weights: <file>, sha256: <hex>} (or pretrained_on: <CT "
            "dataset>), or add allow_random_weights: true to run it untrained on purpose",
        )
    if "url" in backbone:
        from neuroadapt.download import WEIGHTS_DIR

        if Path(backbone["weights"]).parent != Path(WEIGHTS_DIR):
            raise ConfigError(
                f"{where}.backbone.weights",
                "a downloaded checkpoint is written by the download_weights rule",
                f"name it {WEIGHTS_DIR}/<file name>, or drop url to use a file you have",
            )
    source = backbone.get("pretrained_on")
    if source is not None and source not in config["datasets"]:
        raise ConfigError(
            f"{where}.backbone.pretrained_on",
            f"names unknown dataset '{source}'",
            f"use one of: {', '.join(config['datasets'])}",
        )
    reference_method(experiment, where)
    splits = experiment.get("splits") or {}
    if splits.get("leave_group_out"):
        raise ConfigError(
            f"{where}.splits.leave_group_out",
            "training needs a fold count known before the splits are drawn",
            "use folds with group_by instead",
        )
    training_settings(merged_training(config, name), f"{where}.training")
    for method in experiment["methods"]:
        refuse_protocol_settings(method, (config.get("method_settings") or {}).get(method))


# Experiment inputs that come from the diffusion stage.
DIFFUSION_MAPS = frozenset({"fa", "md", "ad", "rd"})


def _check_diffusion(config: dict) -> None:
    """The dwi section's combinations, and, when an experiment needs diffusion maps, that
    the MRtrix3 binaries of the steps set to backend mrtrix3 are on PATH and, with the
    template registration on, that nilearn (which ships the template) is importable (at
    start-up, not mid-run)."""
    from neuroadapt.dwi.mrtrix import check_commands
    from neuroadapt.dwi.settings import backends, settings_from_config
    from neuroadapt.dwi.template import check_available

    low, high = (config.get("petct") or {}).get("static_window_s", (0, 1))
    if low >= high:
        raise ConfigError(
            "petct.static_window_s",
            f"[{low:g}, {high:g}] is not a time window (its start must come before its end)",
            "give [start, end] in seconds after the injection, e.g. [3000, 3600]",
        )

    settings = settings_from_config(config.get("dwi"))
    if any(DIFFUSION_MAPS & set(e["inputs"]) for e in config["experiments"].values()):
        check_commands(backends(settings))
        check_available(settings.template)


def check_weight_files(config: Mapping) -> None:
    """Every backbone weights file the config names (and no download rule fetches) exists
    and has its configured SHA-256: checked at start-up, before any preprocessing, rather
    than in the first training job. Each file is read once."""
    from neuroadapt.io import sha256_of

    digests: dict[str, str] = {}
    for name, experiment in config["experiments"].items():
        backbone = backbone_config(experiment)
        if "weights" not in backbone or "url" in backbone or not experiment.get("methods"):
            continue
        path = backbone["weights"]
        where = f"experiments.{name}.backbone"
        if not Path(path).is_file():
            raise InputError(
                path,
                f"the weights file of {where}.weights does not exist",
                "correct the path, or add url to let the download_weights rule fetch it",
            )
        if path not in digests:
            digests[path] = sha256_of(path)
        if digests[path].lower() != backbone["sha256"].strip().lower():
            raise InputError(
                path,
                f"SHA-256 checksum mismatch: the file has {digests[path]}, {where}.sha256 is "
                f"{backbone['sha256']}",
                "point weights at the file the checksum belongs to, or correct the sha256 "
                "(sha256sum FILE) if the file is the right one",
            )


def converted_bids_dir(name: str) -> str:
    """Where the ``dicom`` rule writes the BIDS dataset converted from DICOM."""
    return f"results/{name}/bids"


def dataset_dir(config: Mapping, name: str) -> str:
    """BIDS root of dataset ``name`` (synthetic ones under resources/demo/, converted ones
    under results/<name>/bids)."""
    dataset = config["datasets"][name]
    if "dicom_dir" in dataset:
        return converted_bids_dir(name)
    return dataset.get("bids_dir", f"{DEMO_ROOT}/{name}")


def required_modalities(config: Mapping, dataset: str) -> list[str]:
    """Raw modalities the experiments on ``dataset`` need, sorted."""
    needed = set()
    for experiment in config["experiments"].values():
        if experiment["dataset"] != dataset:
            continue
        needed |= {INPUT_MODALITY[name] for name in experiment["inputs"]}
        if _is_modality(experiment["target"]):
            needed.add(INPUT_MODALITY[experiment["target"]])
    return sorted(needed)


def _is_modality(target) -> bool:
    return isinstance(target, str) and target in INPUT_MODALITY


def required_columns(config: Mapping, dataset: str) -> list[str]:
    """participants.tsv columns the experiments on ``dataset`` need: targets, survival
    outcome, and the columns the splits group or balance by."""
    from neuroadapt.spec import spec_from_mapping
    from neuroadapt.splits import SplitSettings

    columns = set()
    for name, experiment in config["experiments"].items():
        if experiment["dataset"] != dataset:
            continue
        target = experiment["target"]
        if isinstance(target, list):
            columns |= set(target)
        elif not _is_modality(target):
            columns.add(target)
        survival = experiment.get("survival")
        if survival:
            columns |= {survival["time"], survival["event"]}
        splits = spec_from_mapping(
            SplitSettings, experiment.get("splits"), f"experiments.{name}.splits"
        )
        columns |= {splits.group_by} if splits.group_by else set()
        if splits.require_balance_columns:  # else an absent one skips its check (splits rule)
            columns |= {c for c in (splits.age_column, splits.sex_column) if c}
    return sorted(columns)


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (for use outside Snakemake)."""
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    return validate_config(copy.deepcopy(config))
