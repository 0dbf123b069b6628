"""Config validation: defaults filled, every mistake named with its key and fix."""

from __future__ import annotations

import copy
import hashlib

import pytest
import yaml
from conftest import REPO

from neuroadapt.config import (
    check_weight_files,
    dataset_dir,
    load_config,
    required_columns,
    required_modalities,
    validate_config,
)
from neuroadapt.errors import ConfigError, InputError

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def config_with(change) -> dict:
    config = copy.deepcopy(DEFAULT)
    change(config)
    return config


def test_default_config_is_valid_and_gets_defaults():
    config = load_config(REPO / "config" / "config.yaml")
    dwi = config["datasets"]["demo_dwi"]
    assert dwi["bids_dir"] == "resources/demo/demo_dwi"
    assert dwi["include"] == [] and dwi["check_image_data"] is True
    assert config["datasets"]["demo_petct"]["on_missing_modality"] == "drop"
    assert required_modalities(config, "demo_dwi") == ["clinical", "dwi", "genetics", "report"]
    assert required_modalities(config, "demo_petct") == ["ct", "gtv", "pet"]
    assert required_modalities(config, "demo_ct_pretrain") == []
    # targets, the survival outcome, and the columns the splits balance by
    # age and sex are balance checks: the splits rule skips an absent one, ingestion needs none
    assert required_columns(config, "demo_petct") == ["event", "survival_months"]


def real_petct(config: dict, **keys) -> None:
    """demo_petct as a real dataset with ``keys`` in place of its generator."""
    config["datasets"]["demo_petct"].pop("synthetic")
    config["datasets"]["demo_petct"].update(keys)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["experiments"]["adhd_dti"].update(methds=["lora"]),
            r"config key 'experiments.adhd_dti.methds': is not a known key. "
            r"Fix: did you mean 'methods'\?",
        ),
        (
            lambda c: c.update(dataset={}),
            r"config key 'dataset': is not a known key. Fix: did you mean 'datasets'",
        ),
        (
            lambda c: c["experiments"]["adhd_dti"].update(task="regression"),
            r"'experiments.adhd_dti.task': 'regression' is not allowed. Fix: use one of: binary, "
            r"multiclass",
        ),
        (
            lambda c: c["experiments"]["adhd_dti"].update(inputs=["fa", "dti"]),
            r"'experiments.adhd_dti.inputs.1': 'dti' is not allowed. Fix: use one of: fa, md",
        ),
        (
            lambda c: c["datasets"]["demo_dwi"].update(on_missing_modality="skip"),
            r"'datasets.demo_dwi.on_missing_modality': 'skip' is not allowed.*drop, fail",
        ),
        (
            lambda c: c["experiments"]["adhd_dti"].pop("target"),
            r"'experiments.adhd_dti': 'target' is a required property. Fix: add it",
        ),
        (
            lambda c: c["datasets"]["demo_dwi"].update(include=["001"]),
            r"'datasets.demo_dwi.include.0': '001' does not match",
        ),
        (
            lambda c: c["experiments"]["adhd_dti"].update(dataset="adhd200"),
            r"'experiments.adhd_dti.dataset': names unknown dataset 'adhd200'. Fix: use one of: "
            r"demo_dwi, demo_petct",
        ),
        (
            lambda c: c["datasets"]["demo_dwi"]["synthetic"].update(n_subject=10),
            r"'datasets.demo_dwi.synthetic.n_subject': is not a parameter of this generator",
        ),
        (
            lambda c: c["datasets"]["demo_dwi"].pop("synthetic"),
            r"'datasets.demo_dwi.bids_dir': is missing. Fix: give the path",
        ),
        (
            lambda c: c["datasets"]["demo_dwi"].update(bids_dir="/data/x"),
            r"'datasets.demo_dwi.bids_dir': a synthetic dataset is always written to "
            r"resources/demo/demo_dwi",
        ),
        (
            lambda c: c["datasets"]["demo_dwi"].update(dicom_dir="/dicom"),
            r"'datasets.demo_dwi.dicom_dir': a synthetic dataset is generated, not converted",
        ),
        (
            lambda c: real_petct(c, dicom_dir="/dicom", bids_dir="/bids"),
            r"'datasets.demo_petct.bids_dir': a dataset converted from DICOM is always written "
            r"to results/demo_petct/bids",
        ),
        (
            lambda c: real_petct(c, dicom_dir="/dicom"),
            r"'datasets.demo_petct.dicom_mapping': is missing \(the mapping from DICOM series",
        ),
        (
            lambda c: real_petct(c, bids_dir="/bids", dicom_participants="/t.tsv"),
            r"'datasets.demo_petct.dicom_participants': only applies to a dataset converted",
        ),
        (
            lambda c: c.update(petct={"static_window_s": [3600, 3000]}),
            r"'petct.static_window_s': \[3600, 3000\] is not a time window",
        ),
        (
            lambda c: c["experiments"]["hnc_petct"].pop("survival"),
            r"'experiments.hnc_petct.survival': task 'segmentation\+survival' needs the survival",
        ),
        (
            lambda c: c["experiments"].update(demo_dwi=c["experiments"]["adhd_dti"]),
            r"'experiments.demo_dwi': has the same name as dataset 'demo_dwi'",
        ),
        (
            lambda c: c["datasets"].update(report={"bids_dir": "/x"}),
            r"config key 'report': is a reserved results folder name",
        ),
        (
            lambda c: c.update(interpret={"attributions": ["saliency"]}),
            r"'interpret.attributions.0': 'saliency' is not allowed. Fix: use one of: "
            r"integrated_gradients, grad_cam, occlusion",
        ),
        (
            lambda c: c.update(interpret={"occlusion_window": 0}),
            r"'interpret.occlusion_window': 0 is less than the minimum of 1",
        ),
    ],
)
def test_invalid_config_names_the_key_and_the_fix(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config_with(change))


@pytest.mark.parametrize(
    ("dwi", "message"),
    [
        (
            {"denoise": {"method": "patch2self", "backend": "mrtrix3"}},
            r"'dwi.denoise.method': patch2self is not available with the mrtrix3 backend",
        ),
        (
            {"tensor": {"fit_method": "NLLS", "backend": "mrtrix3"}},
            r"'dwi.tensor.fit_method': NLLS is not available with the mrtrix3 backend",
        ),
        ({"tensor": {"backend": "fsl"}}, r"'dwi.tensor.backend': 'fsl' is not allowed"),
    ],
)
def test_impossible_diffusion_backends_are_config_errors(dwi, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config_with(lambda c: c.update(dwi=dwi)))


def test_a_missing_mrtrix_binary_stops_the_run_at_start_up(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    config = config_with(lambda c: c.update(dwi={"mask": {"backend": "mrtrix3"}}))
    with pytest.raises(
        ConfigError, match=r"'dwi.mask.backend': is mrtrix3 but dwi2mask is not on PATH. Fix: "
    ):
        validate_config(config)
    # without an experiment that needs diffusion maps, the binaries are not needed
    for experiment in config["experiments"].values():
        experiment["inputs"] = [i for i in experiment["inputs"] if i not in ("fa", "md")] or ["t1w"]
        experiment["methods"] = []  # an image method would need fa/md or ct/pet
    validate_config(config)


def test_a_real_dataset_needs_only_a_path():
    config = {
        "datasets": {"adhd": {"bids_dir": "/data/adhd", "label": "dx"}},
        "experiments": {
            "dti": {
                "dataset": "adhd",
                "inputs": ["fa"],
                "target": "dx",
                "task": "binary",
                "methods": ["lora"],
                "backbone": "resnet18_w05",
            }
        },
    }
    validate_config(config)
    assert config["datasets"]["adhd"]["covariates"] == []
    assert required_columns(config, "adhd") == ["dx"]
    config["experiments"]["dti"]["splits"] = {"require_balance_columns": True}
    assert required_columns(config, "adhd") == ["age", "dx", "sex"]


def test_a_dicom_dataset_is_converted_into_results():
    config = {
        "datasets": {
            "adhd": {"dicom_dir": "/dicom/adhd", "dicom_mapping": "dcm2bids.json", "label": "dx"}
        },
        "experiments": {
            "dti": {
                "dataset": "adhd",
                "inputs": ["fa"],
                "target": "dx",
                "task": "binary",
                "methods": [],
            }
        },
    }
    validate_config(config)
    assert dataset_dir(config, "adhd") == "results/adhd/bids"


def test_the_schema_lists_exactly_the_registered_methods_and_backbones():
    from neuroadapt.config import load_schema
    from neuroadapt.methods import available_methods
    from neuroadapt.models import available_backbones

    experiment = load_schema()["$defs"]["experiment"]["properties"]
    assert sorted(experiment["methods"]["items"]["enum"]) == available_methods()
    settings = load_schema()["properties"]["method_settings"]["propertyNames"]["enum"]
    assert sorted(settings) == available_methods()
    backbone = experiment["backbone"]["oneOf"]
    assert sorted(backbone[0]["enum"]) == available_backbones()
    assert sorted(backbone[1]["properties"]["name"]["enum"]) == available_backbones()


def test_feature_backbones_are_the_registered_resnets_and_vits():
    import inspect

    from neuroadapt.experiments import FEATURE_BACKBONES
    from neuroadapt.models.backbones import BACKBONES

    # factories are annotated with the class they build; no paper-size network is built here
    kinds = {name: inspect.signature(f).return_annotation for name, f in BACKBONES.items()}
    assert set(kinds.values()) >= {
        "ResNetBackbone",
        "ViTBackbone",
        "UNETRBackbone",
        "SwinUNETRBackbone",
    }
    features = {name for name, kind in kinds.items() if kind in ("ResNetBackbone", "ViTBackbone")}
    assert features == FEATURE_BACKBONES


def test_an_unknown_method_stops_the_run_at_start_up():
    config = config_with(lambda c: c["experiments"]["adhd_dti"]["methods"].append("lorra"))
    with pytest.raises(
        ConfigError, match=r"'experiments.adhd_dti.methods.6': 'lorra' is not allowed"
    ):
        validate_config(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda e: e.update(backbone={"name": "resnet18_w05", "pretrained_on": "nope"}),
            r"'experiments.adhd_dti.backbone.pretrained_on': names unknown dataset 'nope'",
        ),
        (lambda e: e.pop("backbone"), r"'experiments.adhd_dti.backbone': is missing"),
        (
            lambda e: e.update(reference="lora_plus"),
            r"'experiments.adhd_dti.reference': 'lora_plus' is not one of the experiment's methods",
        ),
        (
            lambda e: e.update(task="multiclass"),
            r"'experiments.adhd_dti.methods': training on task 'multiclass' is not built yet "
            r"\(binary or multilabel or segmentation\+survival only\)",
        ),
        (
            lambda e: e.update(training={"patience": 0}),
            r"'experiments.adhd_dti.training.patience'",
        ),
        (
            lambda e: e.update(inputs=["fa", "ct"]),
            r"'experiments.adhd_dti.inputs': image inputs \['fa', 'ct'\] do not come from one",
        ),
        (
            lambda e: e.update(methods=["lora", "pemma", "brain_adapter"]),
            r"'experiments.adhd_dti.methods': pemma, brain_adapter cannot be trained on task "
            r"'binary' with inputs \['fa', 'md'\]; the train rule trains dora, full_finetune",
        ),
        (
            lambda e: e.update(backbone="unetr_tiny"),
            r"'experiments.adhd_dti.backbone.name': unetr_tiny does not fit task 'binary': its "
            r"methods \(linear_probe, .*, molre\) need pooled features",
        ),
    ],
)
def test_an_experiment_that_cannot_be_trained_stops_the_run_at_start_up(change, message):
    config = config_with(lambda c: change(c["experiments"]["adhd_dti"]))
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda e: e.update(methods=["lora"]),
            r"'experiments.ad_multimodal.methods': lora cannot be trained on task 'binary' with "
            r"inputs .*; the train rule trains anchored_qformer, brain_adapter, feature_concat, "
            r"late_fusion",
        ),
        (
            lambda e: e.update(backbone="resnet18_w05"),
            r"'experiments.ad_multimodal.backbone.name': resnet18_w05 does not fit task 'binary': "
            r"its methods \(.*brain_adapter.*\) need a ViT image encoder",
        ),
        (
            lambda e: e.update(inputs=["fa", "md", "clinical"]),
            r"'experiments.ad_multimodal.inputs': brain_adapter \(paper 2, Brain-Adapter .*\) reads "
            r"report_text. Fix: add report_text to inputs",
        ),
    ],
)
def test_a_multimodal_experiment_that_cannot_be_trained_stops_at_start_up(change, message):
    config = config_with(lambda c: change(c["experiments"]["ad_multimodal"]))
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_weights_need_their_checksum():
    config = config_with(
        lambda c: c["experiments"]["adhd_dti"].update(
            backbone={"name": "resnet50_w2", "weights": "/w/ct_fm.pt"}
        )
    )
    with pytest.raises(ConfigError, match="experiments.adhd_dti.backbone"):
        validate_config(config)


def test_a_wrong_or_missing_weights_file_stops_the_run_at_start_up(tmp_path):
    """check_weight_files (common.smk, before any job): the file and the config key named."""
    weights = tmp_path / "ct_fm.pt"
    weights.write_bytes(b"not the published checkpoint")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    backbone = {"name": "resnet50_w2", "weights": str(weights), "sha256": digest}
    config = config_with(lambda c: c["experiments"]["adhd_dti"].update(backbone=backbone))
    validate_config(config)
    check_weight_files(config)  # the right file: silent
    config["experiments"]["adhd_dti"]["backbone"]["sha256"] = "b" * 64
    with pytest.raises(
        InputError,
        match=rf"ct_fm.pt: SHA-256 checksum mismatch: the file has {digest}, "
        r"experiments.adhd_dti.backbone.sha256 is b{64}. Fix: point weights at the file",
    ):
        check_weight_files(config)
    config["experiments"]["adhd_dti"]["backbone"]["weights"] = str(tmp_path / "gone.pt")
    with pytest.raises(
        InputError,
        match=r"gone.pt: the weights file of experiments.adhd_dti.backbone.weights does not exist",
    ):
        check_weight_files(config)


def preset_with_weights(name: str, experiment: str) -> dict:
    """A paper preset as a user fills it in: the backbone's weights file and checksum."""
    config = yaml.safe_load((REPO / "config" / name).read_text())
    backbone = config["experiments"][experiment]["backbone"]
    config["experiments"][experiment]["backbone"] = {
        "name": backbone,
        "weights": "/weights/ct.pt",
        "sha256": "a" * 64,
    }
    return validate_config(config)


@pytest.mark.parametrize(
    ("name", "experiment", "backbone"),
    [
        ("paper1_adhd.yaml", "adhd_dti", "resnet50_w2"),
        ("paper5_hecktor.yaml", "hnc_petct", "unetr_ct"),
    ],
)
def test_a_paper_preset_without_weights_stops_at_start_up(name, experiment, backbone):
    with pytest.raises(ConfigError) as error:
        load_config(REPO / "config" / name)
    message = str(error.value)
    assert f"experiments.{experiment}.backbone" in message and backbone in message
    assert "weights" in message and "allow_random_weights: true" in message
    config = yaml.safe_load((REPO / "config" / name).read_text())
    config["experiments"][experiment]["backbone"] = {"name": backbone, "allow_random_weights": True}
    validate_config(config)  # untrained on purpose
    # a demo-size backbone without weights is not a paper's model: allowed as before
    config["experiments"][experiment]["backbone"] = (
        "resnet18_w05" if backbone.startswith("resnet") else "unetr_tiny"
    )
    validate_config(config)


def test_the_paper5_preset_is_valid_and_fits_the_unetr():
    config = preset_with_weights("paper5_hecktor.yaml", "hnc_petct")
    experiment = config["experiments"]["hnc_petct"]
    assert experiment["backbone"]["name"] == "unetr_ct" and experiment["splits"]["folds"] == 5
    assert config["petct"]["crop"]["box_voxels"] == [96, 96, 96]  # unetr_ct's input


def test_the_paper_presets_are_valid():
    config = preset_with_weights("paper1_adhd.yaml", "adhd_dti")
    experiment = config["experiments"]["adhd_dti"]
    assert experiment["backbone"]["name"] == "resnet50_w2" and experiment["splits"]["folds"] == 5
    assert config["dwi"]["model_ready"]["shape"] == [128, 128, 128]
    assert config["method_settings"]["lora"] == {"r": 4}


def test_a_downloaded_checkpoint_lives_under_resources_weights():
    backbone = {"name": "resnet50_w2", "sha256": "a" * 64, "url": "https://example.org/w.pt"}
    config = config_with(
        lambda c: c["experiments"]["adhd_dti"].update(backbone=backbone | {"weights": "/w/ct.pt"})
    )
    with pytest.raises(ConfigError, match="backbone.weights': a downloaded checkpoint"):
        validate_config(config)
    config = config_with(
        lambda c: c["experiments"]["adhd_dti"].update(
            backbone=backbone | {"weights": "resources/weights/ct.pt"}
        )
    )
    validate_config(config)


def test_the_readme_example_config_passes_start_up_checks_as_written():
    """The "Your own BIDS dataset" block of README.md, with only its placeholder filled in."""
    import re

    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n# my_study.yaml\n(.*?)```", readme, re.S)
    assert block, "README.md lost its my_study.yaml example"
    config = yaml.safe_load(block.group(1).replace("<64 hex digits>", "ab" * 32))
    validate_config(config)
    assert config["experiments"]["adhd_dti"]["methods"] == ["linear_probe", "lora", "dora"]
    assert config["experiments"]["adhd_dti"]["backbone"]["name"] == "resnet50_w2"
