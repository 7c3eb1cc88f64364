"""Rotated RoIAlign against torchvision (no rotation) and a direct per-sample loop."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from rsvit.ops import RotatedRoIAlign, multilevel_rotated_roi_align, rotated_roi_align
from rsvit.ops.rotated_roi_align import tap_sums


def bilinear_point(fmap: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One bilinear sample of a (C, H, W) map with RoIAlign's border rules, written out by hand."""
    _, height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = math.floor(y), math.floor(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        fmap[:, y0, x0] * (1 - ly) * (1 - lx)
        + fmap[:, y0, x1] * (1 - ly) * lx
        + fmap[:, y1, x0] * ly * (1 - lx)
        + fmap[:, y1, x1] * ly * lx
    )


def reference(
    feats: torch.Tensor, rois: torch.Tensor, out: tuple[int, int], scale: float, ratio: int, aligned: bool
) -> torch.Tensor:
    """Per-RoI, per-bin, per-sample loops over the definition."""
    res = torch.zeros(len(rois), feats.shape[1], *out, dtype=feats.dtype)
    for r, (b, cx, cy, w, h, a) in enumerate(rois.tolist()):
        off = 0.5 if aligned else 0.0
        cx, cy, w, h = cx * scale - off, cy * scale - off, w * scale, h * scale
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        gh = ratio if ratio > 0 else max(1, math.ceil(h / out[0]))
        gw = ratio if ratio > 0 else max(1, math.ceil(w / out[1]))
        for i in range(out[0]):
            for j in range(out[1]):
                acc = torch.zeros(feats.shape[1], dtype=feats.dtype)
                for si in range(gh):
                    for sj in range(gw):
                        v = -h / 2 + (i + (si + 0.5) / gh) * h / out[0]  # along the RoI's h axis
                        u = -w / 2 + (j + (sj + 0.5) / gw) * w / out[1]  # along the RoI's w axis
                        x = cx + u * math.cos(a) - v * math.sin(a)
                        y = cy + u * math.sin(a) + v * math.cos(a)
                        acc += bilinear_point(feats[int(b)], y, x)
                res[r, :, i, j] = acc / (gh * gw)
    return res


def random_rois(n: int, batch: int, size: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            torch.randint(0, batch, (n, 1), generator=g).double(),
            torch.rand(n, 2, generator=g, dtype=torch.float64) * size,
            torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2 + 0.5,
            (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi,
        ],
        dim=1,
    )


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [2, 0])
def test_matches_torchvision_without_rotation(aligned: bool, ratio: int) -> None:
    feats = torch.randn(2, 3, 17, 23, dtype=torch.float64)
    rois = random_rois(12, 2, 40.0, seed=1)
    rois[:, 5] = 0
    rois[:, 3:5] += 2  # keep sides above one feature pixel, where the two clamp rules agree
    boxes = torch.stack(
        [
            rois[:, 0],
            rois[:, 1] - rois[:, 3] / 2,
            rois[:, 2] - rois[:, 4] / 2,
            rois[:, 1] + rois[:, 3] / 2,
            rois[:, 2] + rois[:, 4] / 2,
        ],
        dim=1,
    )
    expected = torchvision.ops.roi_align(feats, boxes, (3, 4), 0.5, ratio, aligned)
    got = rotated_roi_align(feats, rois, (3, 4), 0.5, ratio, aligned)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [1, 2, -1])
def test_matches_direct_reference_with_rotation(aligned: bool, ratio: int) -> None:
    feats = torch.randn(2, 2, 11, 13, dtype=torch.float64)
    rois = random_rois(8, 2, 26.0, seed=2)
    rois[0, 1:3] = torch.tensor([-3.0, 30.0], dtype=torch.float64)  # partly outside the map
    expected = reference(feats, rois, (2, 3), 0.5, ratio, aligned)
    got = rotated_roi_align(feats, rois, (2, 3), 0.5, ratio, aligned)
    assert torch.allclose(got, expected, atol=1e-12)


def test_quarter_turn_reads_the_transposed_patch() -> None:
    # A w x h RoI turned by +pi/2 runs its w axis down the image and its h axis right-to-left.
    feats = torch.arange(64, dtype=torch.float64).reshape(1, 1, 8, 8)
    roi = torch.tensor([[0, 4.0, 4.0, 8.0, 8.0, math.pi / 2]], dtype=torch.float64)
    got = rotated_roi_align(feats, roi, 8, sampling_ratio=1, aligned=True)[0, 0]
    expected = feats[0, 0].t().flip(0)  # row i = image column 7 - i, column j = image row j
    assert torch.allclose(got, expected, atol=1e-9)


def test_gradients() -> None:
    feats = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 3.1, 2.7, 4.3, 2.9, 0.4], [0, 4.2, 3.3, 3.1, 3.7, -1.1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: rotated_roi_align(f, rois, (2, 2), 1.0, 2, True), (feats,))
    rois.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda r: rotated_roi_align(feats.detach(), r, (2, 2), 1.0, 2, True), (rois,)
    )


def test_list_input_module_and_errors() -> None:
    feats = torch.randn(2, 3, 9, 9)
    per_image = [torch.tensor([[4.0, 4.0, 5.0, 3.0, 0.2]]), torch.tensor([[3.0, 5.0, 4.0, 4.0, -0.7]] * 2)]
    stacked = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), torch.cat(per_image)], dim=1)
    module = RotatedRoIAlign((3, 3), spatial_scale=1.0, sampling_ratio=2)
    assert torch.equal(module(feats, per_image), rotated_roi_align(feats, stacked, 3, 1.0, 2))
    assert module(feats, stacked).shape == (3, 3, 3, 3)
    assert rotated_roi_align(feats, torch.zeros(0, 6), 3).shape == (0, 3, 3, 3)
    with pytest.raises(ValueError, match="batch indices"):
        rotated_roi_align(feats, torch.tensor([[2.0, 1, 1, 2, 2, 0]]), 3)
    with pytest.raises(ValueError, match=r"\(K, 6\)"):
        rotated_roi_align(feats, torch.zeros(2, 5), 3)


def test_export_matches_eager() -> None:
    class Pool(torch.nn.Module):
        def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
            return rotated_roi_align(x, rois, 7, 0.25, 2, True)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 20, 24, generator=g)

    def make_rois(k: int) -> torch.Tensor:
        return torch.cat(
            [
                torch.randint(0, 2, (k, 1), generator=g).float(),
                torch.rand(k, 2, generator=g) * 80,
                torch.rand(k, 2, generator=g) * 30 + 2,
                torch.rand(k, 1, generator=g) * 3 - 1.5,
            ],
            dim=1,
        )

    rois = make_rois(10)
    k = torch.export.Dim("k", min=2, max=4096)
    program = torch.export.export(Pool(), (x, rois), dynamic_shapes={"x": None, "rois": {0: k}})
    for r in (rois, make_rois(33)):
        torch.testing.assert_close(program.module()(x, r), Pool()(x, r), atol=0, rtol=0)


def test_traced_path_needs_a_fixed_grid() -> None:
    class Adaptive(torch.nn.Module):
        def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
            return rotated_roi_align(x, rois, 7, 0.25, -1, True)

    rois = torch.tensor([[0.0, 10.0, 10.0, 8.0, 4.0, 0.3]])
    with pytest.raises(Exception, match="sampling_ratio"):
        torch.export.export(Adaptive(), (torch.randn(1, 2, 8, 8), rois))


def test_half_precision_features_are_pooled_at_float32_positions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64, generator=g).to(torch.bfloat16)
    # Centres far from the origin: in bf16 (8 mantissa bits) 201.3 would round to 201.0.
    rois = torch.tensor([[0.0, 201.3, 150.7, 40.0, 18.0, 0.37], [0.0, 99.9, 220.2, 25.0, 30.0, -1.1]])
    pooled = rotated_roi_align(x, rois, 7, 0.25, 2, True)
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled, rotated_roi_align(x.float(), rois, 7, 0.25, 2, True).to(torch.bfloat16))


def test_multilevel_pooling_equals_one_call_per_level() -> None:
    g = torch.Generator().manual_seed(3)
    maps = [torch.randn(2, 5, s, s + 3, generator=g, dtype=torch.float64) for s in (32, 16, 8)]
    scales = [1 / 4, 1 / 8, 1 / 16]
    rois = random_rois(40, 2, 128.0, seed=4)
    levels = torch.randint(0, 3, (40,), generator=g)
    got = multilevel_rotated_roi_align(maps, rois, levels, (3, 4), scales, 2)
    for level, scale in enumerate(scales):
        idx = (levels == level).nonzero(as_tuple=True)[0]
        expected = rotated_roi_align(maps[level], rois[idx], (3, 4), scale, 2, True)
        torch.testing.assert_close(got[idx], expected, atol=1e-12, rtol=0)
    half = multilevel_rotated_roi_align([m.bfloat16() for m in maps], rois.float(), levels, 3, scales, 2)
    full = multilevel_rotated_roi_align(
        [m.bfloat16().float() for m in maps], rois.float(), levels, 3, scales, 2
    )
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, full.to(torch.bfloat16))


def test_multilevel_pooling_errors() -> None:
    maps = [torch.zeros(1, 2, 8, 8)]
    rois = torch.tensor([[0.0, 4, 4, 2, 2, 0]])
    with pytest.raises(ValueError, match="one spatial scale per map"):
        multilevel_rotated_roi_align(maps, rois, torch.zeros(1), 2, [1.0, 0.5], 2)
    with pytest.raises(ValueError, match="sampling_ratio"):
        multilevel_rotated_roi_align(maps, rois, torch.zeros(1), 2, [1.0], 0)
    with pytest.raises(ValueError, match="batch indices"):
        multilevel_rotated_roi_align(
            maps, rois + torch.tensor([1.0, 0, 0, 0, 0, 0]), torch.zeros(1), 2, [1.0], 2
        )


def test_tap_sums_give_the_bag_sums_and_their_gradients() -> None:
    """The ONNX-capture form (one gather and multiply-add per tap) computes what embedding_bag does."""
    g = torch.Generator().manual_seed(5)
    maps = [torch.randn(2, 4, s, s + 2, generator=g, dtype=torch.float64) for s in (24, 12)]
    rois = random_rois(30, 2, 96.0, seed=6).requires_grad_(True)
    levels = torch.randint(0, 2, (30,), generator=g)
    bags = multilevel_rotated_roi_align(maps, rois, levels, (3, 2), [1 / 4, 1 / 8], 2)
    (grad_bags,) = torch.autograd.grad(bags.square().sum(), rois)
    with tap_sums():
        taps = multilevel_rotated_roi_align(maps, rois, levels, (3, 2), [1 / 4, 1 / 8], 2)
    (grad_taps,) = torch.autograd.grad(taps.square().sum(), rois)
    torch.testing.assert_close(taps, bags, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_taps, grad_bags, atol=1e-10, rtol=0)
    assert float(bags.abs().max()) > 0.1
    # the switch is scoped to the block
    program = torch.export.export(RotatedRoIAlign(2, 1 / 4, 2), (maps[0].float(), rois.detach()[:4].float()))
    assert any("embedding_bag" in str(node.target) for node in program.graph.nodes)
