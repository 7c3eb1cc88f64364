"""DPT (dense prediction transformer): official DPT-Hybrid / Large / Base and the DPT decoder on any backbone.

Numerically equal to ``isl-org/DPT`` (timm 0.4.5 semantics); official checkpoints load after
:func:`convert_official_dpt_state_dict`.
"""

from rsvit.models.dpt.convert import UNUSED_OFFICIAL_PREFIXES, convert_official_dpt_state_dict
from rsvit.models.dpt.encoder import (
    DPTViTBackbone,
    HybridPatchEmbed,
    LegacyStdConv2dSame,
    Readout,
    Reassemble,
    resize_pos_embed,
)
from rsvit.models.dpt.head import (
    DepthOutput,
    DPTHead,
    FusionBlock,
    ResidualConvUnit,
    SegmentationOutput,
)
from rsvit.models.dpt.model import (
    DPT,
    DPT_MEAN,
    DPT_STD,
    DPT_VARIANTS,
    dpt_base,
    dpt_hybrid,
    dpt_hybrid_reduced,
    dpt_large,
    dpt_with_backbone,
    normalize,
)

__all__ = [
    "DPT",
    "DPT_MEAN",
    "DPT_STD",
    "DPT_VARIANTS",
    "UNUSED_OFFICIAL_PREFIXES",
    "DPTHead",
    "DPTViTBackbone",
    "DepthOutput",
    "FusionBlock",
    "HybridPatchEmbed",
    "LegacyStdConv2dSame",
    "Readout",
    "Reassemble",
    "ResidualConvUnit",
    "SegmentationOutput",
    "convert_official_dpt_state_dict",
    "dpt_base",
    "dpt_hybrid",
    "dpt_hybrid_reduced",
    "dpt_large",
    "dpt_with_backbone",
    "normalize",
    "resize_pos_embed",
]
