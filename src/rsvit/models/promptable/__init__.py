"""Promptable segmentation: Segment Anything (image encoder from timm, prompt encoder and decoder ours)."""

from rsvit.models.promptable.convert import convert_official_sam_state_dict
from rsvit.models.promptable.image_encoder import SamImageEncoder
from rsvit.models.promptable.mask_decoder import MaskDecoder
from rsvit.models.promptable.prompt_encoder import PromptEncoder
from rsvit.models.promptable.sam import SAM_VARIANTS, Sam, SamConfig, build_sam
from rsvit.models.promptable.two_way_transformer import TwoWayTransformer

__all__ = [
    "SAM_VARIANTS",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "SamConfig",
    "SamImageEncoder",
    "TwoWayTransformer",
    "build_sam",
    "convert_official_sam_state_dict",
]
