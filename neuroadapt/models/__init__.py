"""Backbones (image feature extractors and segmentation networks), encoders of non-image
modalities, and the classifier that puts a head on a backbone. Importing this package
registers every backbone below."""

from neuroadapt.models.backbones import (
    BackboneOutput,
    ResNetBackbone,
    available_backbones,
    get_backbone,
    load_pretrained,
)
from neuroadapt.models.classifier import Classifier, make_head
from neuroadapt.models.swin_unetr import SwinUNETRBackbone
from neuroadapt.models.tabular import SequenceTokenEncoder, TabularMLP, TabularTokenEncoder
from neuroadapt.models.unetr import UNETRBackbone
from neuroadapt.models.vit import ViTBackbone

__all__ = [
    "BackboneOutput",
    "Classifier",
    "ResNetBackbone",
    "SequenceTokenEncoder",
    "SwinUNETRBackbone",
    "TabularMLP",
    "TabularTokenEncoder",
    "UNETRBackbone",
    "ViTBackbone",
    "available_backbones",
    "get_backbone",
    "load_pretrained",
    "make_head",
]
