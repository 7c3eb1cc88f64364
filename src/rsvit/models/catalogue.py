"""What backbones rsvit configures, and how big they are."""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from rsvit.models.backbones.factory import BACKBONE_ALIASES, create_backbone

__all__ = ["BackboneInfo", "backbone_table", "format_table"]


@dataclass(frozen=True)
class BackboneInfo:
    """One row of ``rsvit models``: a backbone's timm model, parameter count and feature channels/strides."""

    name: str
    timm_name: str
    params: int
    channels: list[int]
    reductions: list[int]


def backbone_table() -> list[BackboneInfo]:
    """Builds every configured backbone on the meta device (no memory, no weights) to describe it."""
    rows = []
    for name in sorted(BACKBONE_ALIASES):
        with torch.device("meta"):
            bb = create_backbone(name)
        rows.append(
            BackboneInfo(
                name=name,
                timm_name=BACKBONE_ALIASES[name],
                params=sum(p.numel() for p in bb.parameters()),
                channels=bb.channels,
                reductions=bb.reductions,
            )
        )
    return rows


def format_table(rows: list[BackboneInfo]) -> str:
    """The backbone rows as the plain-text table ``rsvit models`` prints."""
    header = f"{'backbone':<12} {'timm model':<30} {'params (M)':>10}  {'channels':<24} strides"
    lines = [header, "-" * len(header)]
    for r in rows:
        chans = ",".join(map(str, r.channels))
        strides = ",".join(map(str, r.reductions))
        lines.append(f"{r.name:<12} {r.timm_name:<30} {r.params / 1e6:>10.2f}  {chans:<24} {strides}")
    lines.append(f"(any other of timm's {len(timm.list_models())} models works by its timm name)")
    return "\n".join(lines)
