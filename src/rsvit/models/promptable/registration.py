"""SAM in rsvit's registries.

``ModelSpec(task="promptable", backbone="sam_vit_b")`` builds it, and ``rsvit.weights`` converts
official files with family ``"sam"``.

The spec's ``backbone`` names the SAM variant (``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``);
``head_kwargs`` override :class:`~rsvit.models.promptable.sam.SamConfig` fields (e.g. a smaller
``img_size``), and ``in_chans`` other than 3 widens the patch embedding the way timm adapts stems.
Any other backbone name is built by the backbone factory and becomes the image encoder through a small
neck (:mod:`rsvit.models.promptable.backbone_encoder`), with SAM's prompt encoder and mask decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsvit.models.promptable.backbone_encoder import build_backbone_sam
from rsvit.models.promptable.bands import adapt_sam_in_chans
from rsvit.models.promptable.convert import convert_official_sam_state_dict
from rsvit.models.promptable.sam import SAM_VARIANTS, Sam, build_sam
from rsvit.models.registry import register_task_model
from rsvit.weights.convert import register_converter

if TYPE_CHECKING:
    from rsvit.models.spec import ModelSpec

__all__ = ["SAM_BACKBONES", "build_sam_from_spec"]

SAM_BACKBONES = tuple(f"sam_{name}" for name in SAM_VARIANTS)


@register_task_model("promptable", "sam", default=True)
def build_sam_from_spec(spec: ModelSpec) -> Sam:
    """The promptable model a spec describes (untrained; weights come from the model file)."""
    if spec.backbone not in SAM_BACKBONES:
        return build_backbone_sam(spec)
    model = build_sam(spec.backbone.removeprefix("sam_"), **spec.head_kwargs)
    if spec.in_chans != 3:
        model = adapt_sam_in_chans(model, spec.in_chans)
    return model


register_converter("sam")(convert_official_sam_state_dict)
