"""Models: backbones with one multi-scale feature API, task heads and whole models."""

from rsvit.models.backbones import Backbone, create_backbone, list_backbones

__all__ = ["Backbone", "create_backbone", "list_backbones"]
