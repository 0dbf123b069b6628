"""What an experiment entry of the config says about training: which image tensor its
inputs come from, its backbone, its reference method. Light (no torch), so the workflow
and every stage can read experiments the same way."""

from __future__ import annotations

from collections.abc import Mapping

from neuroadapt.errors import ConfigError
from neuroadapt.method_cards import cards_of_family

__all__ = [
    "IMAGE_CHANNELS",
    "BACKBONE_KINDS",
    "FEATURE_BACKBONES",
    "IMAGE_METHODS",
    "MULTIMODAL_CLASSIFICATION_METHODS",
    "NON_IMAGE_INPUTS",
    "SEGMENTATION_BACKBONES",
    "SEGMENTATION_SURVIVAL_METHODS",
    "VIT_BACKBONES",
    "backbone_config",
    "experiment_methods",
    "image_kind",
    "phase1_modalities",
    "reference_method",
    "trained_experiments",
    "UNIMODAL_PREFIX",
]

#: Image inputs -> (model-ready tensor kind, channel in it). A kind's tensors are written by
#: one preprocessing stage: famd by the diffusion stage, ctpet by the CT/PET stage.
IMAGE_CHANNELS: dict[str, tuple[str, int]] = {
    "fa": ("famd", 0),
    "md": ("famd", 1),
    "ct": ("ctpet", 0),
    "pet": ("ctpet", 1),
}


#: Methods by family, from their cards (neuroadapt/method_cards.py): what the train rule
#: trains for a binary or multilabel experiment on image inputs (one backbone + head); for
#: segmentation+survival on CT and PET (paper 5); for a binary experiment with report text,
#: clinical or genetic inputs besides the image (papers 2 and 4).
IMAGE_METHODS = frozenset(card.name for card in cards_of_family("image"))
SEGMENTATION_SURVIVAL_METHODS = frozenset(
    card.name for card in cards_of_family("segmentation_survival")
)
MULTIMODAL_CLASSIFICATION_METHODS = frozenset(card.name for card in cards_of_family("multimodal"))
#: Experiment inputs that are not image channels (neuroadapt.nonimage_inputs reads them).
NON_IMAGE_INPUTS = ("report_text", "clinical", "genetics")
#: ``unimodal_<modality>`` is paper 4's phase-1 model of that modality
#: (:mod:`neuroadapt.methods.unimodal`), trained first where a method builds on phase 1.
UNIMODAL_PREFIX = "unimodal_"
#: ViT backbones: what those methods' image encoder is.
VIT_BACKBONES = frozenset({"vit_m3d", "vit_tiny"})

#: Backbones that map a volume to pooled features, which the image methods put a head on
#: (the segmentation networks of paper 5 map it to a mask). A test keeps this equal to the
#: registry's ResNet and ViT entries.
FEATURE_BACKBONES = frozenset(
    {"resnet50_w2", "resnet18_w05", "resnet10_w025", "vit_m3d", "vit_tiny"}
)
#: The papers' foundation-model sizes: meaningless without their pretrained weights, so an
#: experiment naming one without weights stops at start-up unless it allows random weights.
PAPER_BACKBONES = frozenset({"resnet50_w2", "vit_m3d", "unetr_ct", "swinunetr_ct"})
#: The CT segmentation networks paper 5's methods extend (UNETR and Swin UNETR).
SEGMENTATION_BACKBONES = frozenset({"unetr_ct", "unetr_tiny", "swinunetr_ct", "swinunetr_tiny"})
#: A method card's ``backbones`` kind -> (the backbones of that kind, what they provide).
BACKBONE_KINDS = {
    "features": (FEATURE_BACKBONES, "pooled features"),
    "vit": (VIT_BACKBONES, "a ViT image encoder"),
    "segmentation": (SEGMENTATION_BACKBONES, "a CT segmentation network"),
}


def image_kind(inputs, where: str) -> str:
    """The one model-ready tensor kind (``famd`` or ``ctpet``) the image ``inputs`` come from."""
    images = [name for name in inputs if name in IMAGE_CHANNELS]
    kinds = {IMAGE_CHANNELS[name][0] for name in images}
    if len(kinds) != 1:
        raise ConfigError(
            f"{where}.inputs",
            f"image inputs {images} do not come from one model-ready tensor",
            "give fa/md (diffusion) or ct/pet (CT/PET) inputs to an image-only method",
        )
    return kinds.pop()


def trained_experiments(config: Mapping) -> list[str]:
    """Experiments with at least one method (an empty methods list: splits only)."""
    return [name for name, e in config["experiments"].items() if e.get("methods")]


def backbone_config(experiment: Mapping) -> dict:
    """An experiment's backbone entry as a mapping: a bare name becomes {name: ...}."""
    backbone = experiment.get("backbone")
    return {"name": backbone} if isinstance(backbone, str) else dict(backbone or {})


def phase1_modalities(experiment: Mapping) -> list[str]:
    """The modalities whose phase-1 model (paper 4: ``unimodal_<modality>``) the experiment
    trains: every one of its inputs (``image`` for the image channels) when one of its
    methods builds on phase 1 (card ``uses_phase1``), else none."""
    from neuroadapt.method_cards import method_cards

    cards = method_cards()
    methods = experiment.get("methods") or []
    if not any(m in cards and cards[m].uses_phase1 for m in methods):
        return []
    inputs = list(experiment.get("inputs") or [])
    image = ["image"] if any(name in IMAGE_CHANNELS for name in inputs) else []
    return image + [name for name in NON_IMAGE_INPUTS if name in inputs]


def experiment_methods(experiment: Mapping) -> list[str]:
    """Every method an experiment trains and evaluates: its ``methods``, then the phase-1
    models its paper-4 methods build on (``unimodal_<modality>``, the uni-modal baselines),
    each once."""
    methods = list(experiment.get("methods") or [])
    phase1 = [f"{UNIMODAL_PREFIX}{m}" for m in phase1_modalities(experiment)]
    return methods + [m for m in phase1 if m not in methods]


def reference_method(experiment: Mapping, where: str) -> str:
    """The method every other is compared with: ``reference``, else linear_probe when the
    experiment runs it, else its first method."""
    methods = list(experiment["methods"])
    reference = experiment.get("reference")
    if reference is None:
        return "linear_probe" if "linear_probe" in methods else methods[0]
    if reference not in methods:
        raise ConfigError(
            f"{where}.reference",
            f"'{reference}' is not one of the experiment's methods",
            f"use one of: {', '.join(methods)}",
        )
    return reference
