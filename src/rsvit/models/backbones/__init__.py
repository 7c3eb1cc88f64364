"""Backbones: our ViTAEv2 plus timm models behind one factory returning NCHW feature pyramids."""

from rsvit.models.backbones import vitaev2 as vitaev2  # registers the ViTAEv2 checkpoint converter
from rsvit.models.backbones.factory import Backbone, create_backbone, list_backbones

__all__ = ["Backbone", "create_backbone", "list_backbones"]
