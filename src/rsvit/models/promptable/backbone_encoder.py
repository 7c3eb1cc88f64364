"""Any rsvit backbone as the image encoder of a promptable model.

SAM's prompt encoder and mask decoder read one ``(B, C, S/16, S/16)`` image embedding. A backbone from
:func:`rsvit.models.backbones.create_backbone` gives a pyramid of maps instead (strides 4..32, or several
stride-16 blocks of a plain ViT). The neck here turns that pyramid into the embedding:

1. the maps at stride 8 and coarser are used (every map the backbone returns when ``out_indices`` were
   chosen explicitly; fine stride-4 maps carry little that a 16-pixel grid could keep);
2. each is projected to ``C`` channels by a 1x1 convolution and resampled to the ``S/16`` grid: finer maps
   are averaged over their cells, coarser ones upsampled bilinearly; the projections are summed, so every
   scale contributes to every cell;
3. LayerNorm2d, 3x3 convolution, LayerNorm2d: the end of SAM's own neck, so the embedding is normalised
   per position the way the decoder was trained to read it.

Such a model needs training before its masks mean anything: distil the encoder from a SAM teacher
(:mod:`rsvit.tasks.distillation_encoder`, the decoder copied unchanged) or train the decoder with it.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import TYPE_CHECKING

import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from rsvit.errors import ModelSpecError
from rsvit.models.backbones import Backbone, create_backbone
from rsvit.models.promptable.sam import Sam, SamConfig, assemble_sam

if TYPE_CHECKING:
    from rsvit.models.spec import ModelSpec

__all__ = ["BackboneImageEncoder", "build_backbone_sam"]

#: Finest stride the neck reads by default.
MIN_NECK_REDUCTION = 8

# SamConfig fields that describe the ViT encoder only; they have no meaning with a backbone encoder.
_VIT_ONLY_FIELDS = tuple(f.name for f in fields(SamConfig) if f.name.startswith("encoder_"))


class BackboneImageEncoder(nn.Module):
    """Backbone + fusing neck mapping a padded ``(B, bands, S, S)`` image to ``(B, C, S/16, S/16)``.

    Args:
        backbone: a multi-scale backbone (``channels``/``reductions`` per returned map).
        img_size: side ``S`` of the square model input.
        out_chans: embedding width ``C`` (the prompt encoder's and decoder's width).
        patch_size: stride of the embedding grid (16 for every SAM decoder).
        levels: which of the backbone's maps feed the neck; default those at stride 8 and coarser.
    """

    def __init__(
        self,
        backbone: Backbone,
        img_size: int,
        out_chans: int,
        patch_size: int = 16,
        levels: list[int] | None = None,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ModelSpecError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        if levels is None:
            levels = [i for i, r in enumerate(backbone.reductions) if r >= MIN_NECK_REDUCTION]
            levels = levels or list(range(len(backbone.reductions)))
        self.img_size = img_size
        self.patch_size = patch_size
        self.out_chans = out_chans
        self.levels = list(levels)
        self.backbone = backbone
        self.projections = nn.ModuleList(
            nn.Conv2d(backbone.channels[i], out_chans, kernel_size=1, bias=False) for i in self.levels
        )
        self.neck = nn.Sequential(
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @property
    def grid_size(self) -> int:
        """Embedding-grid side ``S / patch_size``."""
        return self.img_size // self.patch_size

    def _to_grid(self, x: Tensor, reduction: int) -> Tensor:
        # Keep the cells that cover the S x S input (the backbone may pad to its deepest stride).
        cells = math.ceil(self.img_size / reduction)
        x = x[..., :cells, :cells]
        grid = self.grid_size
        if cells == grid:
            return x
        if cells > grid:
            return F.adaptive_avg_pool2d(x, grid)
        return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"the image encoder takes (B, C, {self.img_size}, {self.img_size}) input, got "
                f"{tuple(x.shape)}; resize the long side to {self.img_size} and pad (see "
                "rsvit.models.promptable.transforms)"
            )
        maps = self.backbone(x)
        fused = sum(
            self._to_grid(project(maps[i]), self.backbone.reductions[i])
            for i, project in zip(self.levels, self.projections, strict=True)
        )
        return self.neck(fused)


def build_backbone_sam(spec: ModelSpec) -> Sam:
    """The promptable model of a spec whose backbone is an rsvit backbone (untrained).

    ``head_kwargs`` set the decoder side like for SAM (``img_size``, ``prompt_embed_dim``, decoder sizes,
    ``pixel_mean``/``pixel_std``); the ViT-only ``encoder_*`` fields are refused. ``backbone_kwargs`` go
    to the backbone factory (``out_indices`` picks the maps the neck fuses). With ``in_chans`` other than
    3 and no ``pixel_mean``/``pixel_std`` given, every band gets the mean of SAM's RGB values.
    """
    vit_only = sorted(set(spec.head_kwargs) & set(_VIT_ONLY_FIELDS))
    if vit_only:
        raise ModelSpecError(
            f"head_kwargs {vit_only} configure SAM's ViT encoder and do not apply to the {spec.backbone!r} "
            "backbone; remove them (backbone_kwargs configure the backbone)"
        )
    known = {f.name for f in fields(SamConfig)}
    unknown = sorted(set(spec.head_kwargs) - known)
    if unknown:
        raise ModelSpecError(f"unknown head_kwargs {unknown} for a promptable model; known: {sorted(known)}")
    config = replace(SamConfig(), **spec.head_kwargs)
    if spec.in_chans != config.in_chans:
        spread = {
            name: (sum(getattr(config, name)) / len(getattr(config, name)),) * spec.in_chans
            for name in ("pixel_mean", "pixel_std")
            if name not in spec.head_kwargs
        }
        config = replace(config, in_chans=spec.in_chans, **spread)
    for name in ("pixel_mean", "pixel_std"):
        if len(getattr(config, name)) != spec.in_chans:
            raise ModelSpecError(
                f"head_kwargs {name} has {len(getattr(config, name))} values, the model takes "
                f"{spec.in_chans} bands"
            )
    backbone_kwargs = dict(spec.backbone_kwargs)
    explicit = "out_indices" in backbone_kwargs
    backbone = create_backbone(spec.backbone, in_chans=spec.in_chans, **backbone_kwargs)
    encoder = BackboneImageEncoder(
        backbone,
        config.img_size,
        config.prompt_embed_dim,
        config.patch_size,
        levels=list(range(len(backbone.reductions))) if explicit else None,
    )
    return assemble_sam(config, encoder)
