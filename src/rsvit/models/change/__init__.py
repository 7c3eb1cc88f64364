"""Change-detection models: two co-registered dates in, per-pixel change logits out."""

from rsvit.models.change.bit import (
    BIT,
    OFFICIAL_PREPROCESSING,
    RSP_PREPROCESSING,
    BITResNet18,
    bit_resnet18_dd8,
    bit_resnet18_dd8_dedim8,
    bit_rsp,
    convert_official_bit_state_dict,
    convert_rsp_cd_state_dict,
)
from rsvit.models.change.losses import BITCrossEntropyLoss, bit_cross_entropy

__all__ = [
    "BIT",
    "OFFICIAL_PREPROCESSING",
    "RSP_PREPROCESSING",
    "BITCrossEntropyLoss",
    "BITResNet18",
    "bit_cross_entropy",
    "bit_resnet18_dd8",
    "bit_resnet18_dd8_dedim8",
    "bit_rsp",
    "convert_official_bit_state_dict",
    "convert_rsp_cd_state_dict",
]
