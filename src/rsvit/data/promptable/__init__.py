"""Promptable-segmentation training data: targets and prompts drawn from label masks, in SAM's input frame."""

from rsvit.data.promptable.corrections import error_region_points, round_schedule
from rsvit.data.promptable.dataset import PROMPT_KEYS, PromptableDataset, promptable_collate
from rsvit.data.promptable.prompts_from_masks import (
    PromptSampler,
    SampledPrompts,
    mask_boxes,
    noisy_boxes,
    sample_points,
    target_masks,
)

__all__ = [
    "PROMPT_KEYS",
    "PromptSampler",
    "PromptableDataset",
    "SampledPrompts",
    "error_region_points",
    "mask_boxes",
    "noisy_boxes",
    "promptable_collate",
    "round_schedule",
    "sample_points",
    "target_masks",
]
