"""The DPT decoder on the multi-scale contract: our other backbones, fusion semantics, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsvit.models import create_backbone
from rsvit.models.dpt import DPT, DPTHead, FusionBlock, ResidualConvUnit, dpt_with_backbone
from rsvit.models.segmentor import Segmentor


@pytest.mark.parametrize("name", ["vitaev2_s", "resnet50", "swin_t"])
def test_depth_on_our_backbones(name: str) -> None:
    model = dpt_with_backbone(name, features=32).eval()
    assert model.head.in_channels == model.backbone.channels
    assert model.backbone.reductions == [4, 8, 16, 32]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
        odd = model(torch.randn(1, 3, 40, 56))  # the backbone pads; the output is cropped back
    assert out.shape == (1, 64, 64) and odd.shape == (1, 40, 56)
    assert out.min() >= 0 and torch.isfinite(out).all()


def test_segmentation_on_backbone_with_more_bands() -> None:
    model = dpt_with_backbone("swin_t", task="segmentation", num_classes=6, features=32, in_chans=4).eval()
    x = torch.randn(2, 4, 64, 96)
    with torch.no_grad():
        logits, aux = model.forward_with_aux(x)
    assert logits.shape == (2, 6, 64, 96) and aux is not None and aux.shape == (2, 6, 64, 96)
    with pytest.raises(ValueError, match="4 input bands, got 3"):
        model(torch.randn(1, 3, 64, 64))


def test_head_fits_the_segmentor() -> None:
    backbone = create_backbone("resnet18")
    head = DPTHead(backbone.channels, features=16, task="segmentation", num_classes=3)
    seg = Segmentor(backbone, head).eval()
    with torch.no_grad():
        assert seg(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_decode_resolutions_and_structure() -> None:
    head = DPTHead([4, 8, 16, 32], features=8).eval()
    maps = [torch.randn(1, c, 32 // 2**i, 48 // 2**i) for i, c in enumerate([4, 8, 16, 32])]
    outs = head.decode(maps)
    # Each fusion output is twice the resolution of its own level: p1 at stride 2 when map 0 has stride 4.
    assert [tuple(o.shape[-2:]) for o in outs] == [(64, 96), (32, 48), (16, 24), (8, 12)]
    assert head(maps).shape == (1, 1, 128, 192)
    assert head.fusions[-1].skip_unit is None and all(f.skip_unit is not None for f in head.fusions[:-1])
    assert all(p.bias is None for p in head.projections)


def test_residual_unit_adds_unactivated_input() -> None:
    unit = ResidualConvUnit(4)
    for conv in (unit.conv1, unit.conv2):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.randn(1, 4, 5, 5)
    assert (x < 0).any()
    torch.testing.assert_close(unit(x), x)  # an in-place ReLU would return relu(x) here


def test_fusion_block_order_of_operations() -> None:
    block = FusionBlock(4).eval()
    x, skip = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 3, 5)
    merged = block.unit(x + block.skip_unit(skip))
    up = F.interpolate(merged, scale_factor=2, mode="bilinear", align_corners=True)
    torch.testing.assert_close(block(x, skip), block.out_conv(up))
    # Upsampling to an explicit size equals the x2 step when the sizes double.
    torch.testing.assert_close(block(x, skip, size=(6, 10)), block(x, skip))
    with pytest.raises(ValueError, match="without a skip"):
        FusionBlock(4, has_skip=False)(x, skip)


class _FakeBackbone(nn.Module):
    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        self.channels, self.reductions, self.in_chans = channels, reductions, 3

    def forward(self, x: Tensor) -> list[Tensor]:
        raise AssertionError("not called")


def test_head_errors() -> None:
    head = DPTHead([4, 8], features=8)
    with pytest.raises(ValueError, match="list of 2 NCHW maps, got a single tensor"):
        head(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="list of 2 NCHW maps, got 1 maps"):
        head([torch.zeros(1, 4, 8, 8)])
    with pytest.raises(ValueError, match=r"input 1 must be \(B, 8, H, W\)"):
        head([torch.zeros(1, 4, 8, 8), torch.zeros(1, 5, 4, 4)])
    with pytest.raises(ValueError, match="task must be"):
        DPTHead([4], task="detection")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auxiliary output exists only for segmentation"):
        DPTHead([4], aux=True)
    with pytest.raises(ValueError, match=r"strides .* must grow.*dpt_base"):
        DPT(_FakeBackbone([8, 8], [16, 16]), DPTHead([8, 8], features=8))
