"""Backbones (feature extractors) and the classifier that puts a head on them."""

from neuroadapt.models.backbones import (
    BackboneOutput,
    ResNetBackbone,
    available_backbones,
    get_backbone,
    load_pretrained,
)
from neuroadapt.models.classifier import Classifier, make_head

__all__ = [
    "BackboneOutput",
    "Classifier",
    "ResNetBackbone",
    "available_backbones",
    "get_backbone",
    "load_pretrained",
    "make_head",
]
