"""Models: backbones with one multi-scale feature API, task heads and whole models."""

from rsvit.models.backbones import Backbone, create_backbone, list_backbones
from rsvit.models.factory import ModelSpec, build_model, load_model, save_model

__all__ = [
    "Backbone",
    "ModelSpec",
    "build_model",
    "create_backbone",
    "list_backbones",
    "load_model",
    "save_model",
]
