"""Backbones (feature extractors) and the classifier that puts a head on them."""

from neuroadapt.models.backbones import (
    BackboneOutput,
    ResNetBackbone,
    available_backbones,
    get_backbone,
    load_pretrained,
)
from neuroadapt.models.classifier import Classifier, make_head
from neuroadapt.models.vit import ViTBackbone

__all__ = [
    "BackboneOutput",
    "Classifier",
    "ResNetBackbone",
    "ViTBackbone",
    "available_backbones",
    "get_backbone",
    "load_pretrained",
    "make_head",
]
