"""Task heads that turn a backbone's list of NCHW feature maps into dense predictions."""

from rsvit.models.heads.common import ConvNormAct, DenseHead
from rsvit.models.heads.fcn import FCNHead
from rsvit.models.heads.upernet import PyramidPooling, UperNetHead

__all__ = ["ConvNormAct", "DenseHead", "FCNHead", "PyramidPooling", "UperNetHead"]
