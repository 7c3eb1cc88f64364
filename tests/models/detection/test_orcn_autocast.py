"""Oriented R-CNN under bf16 autocast: boxes and scores stay float32 and close to the fp32 run."""

from __future__ import annotations

import torch
from orcn_fixture import build_tiny_orcn

from rsvit.ops import box_iou_rotated


def test_bf16_autocast_keeps_boxes_in_float32(reference_dir) -> None:
    model, _ = build_tiny_orcn(reference_dir / "fixtures")
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)[0]
    assert out["boxes"].dtype == torch.float32 and out["scores"].dtype == torch.float32
    assert out["boxes"].shape[0] > 0 and bool(torch.isfinite(out["boxes"]).all())
    # The best fp32 detection is found again (same class, IoU > 0.5) by the bf16 run.
    best = ref["boxes"][:1]
    same_class = out["labels"] == ref["labels"][0]
    assert float(box_iou_rotated(best, out["boxes"][same_class]).max()) > 0.5
