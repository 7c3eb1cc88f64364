"""Rotated IoU against shapely polygon intersection, including degenerate configurations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch

from rsvit.ops import box_iou_rotated, obb_to_poly, rotated_box_intersection
from rsvit.ops.reference import box_iou_rotated_shapely, obb_to_shapely

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def random_boxes(n: int, seed: int, extent: float = 60.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g, dtype=dtype) * extent
    sizes = torch.rand(n, 2, generator=g, dtype=dtype) * 30 + 0.1
    angles = (torch.rand(n, 1, generator=g, dtype=dtype) - 0.5) * 2 * math.pi
    return torch.cat([centers, sizes, angles], dim=1)


def special_boxes() -> torch.Tensor:
    """Identical, nested, touching, collinear, swapped-parameter and degenerate boxes."""
    rows = [
        [10.0, 10.0, 4.0, 2.0, 0.3],
        [10.0, 10.0, 4.0, 2.0, 0.3],  # identical
        [10.0, 10.0, 4.0, 2.0, 0.3 + math.pi],  # same rectangle, half turn
        [10.0, 10.0, 2.0, 4.0, 0.3 + math.pi / 2],  # same rectangle, sides swapped
        [10.0, 10.0, 2.0, 1.0, 0.3],  # nested, same angle
        [10.0, 10.0, 1.0, 1.0, 1.1],  # nested, other angle
        [14.0, 10.0, 4.0, 2.0, 0.0],  # touching [10,10,4,2,0] along an edge
        [10.0, 10.0, 4.0, 2.0, 0.0],
        [14.0, 12.0, 4.0, 2.0, 0.0],  # touching [10,10,4,2,0] at a corner
        [12.0, 10.0, 4.0, 2.0, 0.0],  # half overlap, collinear top and bottom edges
        [10.0, 10.0, 4.0, 4.0, math.pi / 4],  # square diamond over an axis-aligned square
        [10.0, 10.0, 4.0, 4.0, 0.0],
        [10.0, 10.0, 0.0, 3.0, 0.2],  # zero width
        [10.0, 10.0, 0.0, 0.0, 0.0],  # a point
        [30.0, 30.0, 1e-3, 1e-3, 0.5],  # tiny
        [1000.0, 1000.0, 5.0, 3.0, 0.1],  # far away
        [10.0, 10.0, 100.0, 100.0, 0.7],  # contains most others
    ]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_iou_matches_shapely_on_random_boxes(device: str, dtype: torch.dtype, tol: float) -> None:
    boxes = random_boxes(200, seed=0)  # 40,000 pairs, a third of them overlapping
    expected = box_iou_rotated_shapely(boxes, boxes)
    got = box_iou_rotated(boxes.to(device, dtype), boxes.to(device, dtype)).cpu().double().numpy()
    assert (expected > 0).sum() > 5000
    assert np.abs(got - expected).max() <= tol


def test_iou_matches_shapely_on_special_cases() -> None:
    boxes = special_boxes()
    expected = box_iou_rotated_shapely(boxes, boxes)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        got = box_iou_rotated(boxes.to(dtype), boxes.to(dtype)).double().numpy()
        assert np.abs(got - expected).max() <= tol, dtype


def test_special_cases_have_the_expected_values() -> None:
    b = special_boxes()
    iou = box_iou_rotated(b, b)
    assert torch.allclose(iou[0, 1:4], torch.ones(3, dtype=torch.float64))  # same rectangle, any parameters
    assert iou[0, 4].item() == pytest.approx(0.25)  # nested 2x1 in 4x2
    assert iou[7, 6].item() == pytest.approx(0.0, abs=1e-12)  # edge contact has no area
    assert iou[7, 8].item() == pytest.approx(0.0, abs=1e-12)  # corner contact
    assert iou[7, 9].item() == pytest.approx(4 / 12)  # half overlap: 4 / (8 + 8 - 4)
    # A 4x4 square and the same square turned 45 degrees meet in a regular octagon: the square minus
    # four corner triangles with legs 4 - 2*sqrt(2).
    octagon = 16 - 4 * (4 - 2 * math.sqrt(2)) ** 2 / 2
    assert iou[10, 11].item() == pytest.approx(octagon / (32 - octagon))
    assert iou[12:14].max() < 1e-12 and iou[:, 12:14].max() < 1e-12  # zero-area boxes
    assert iou[12, 12] == 0 and iou[13, 13] == 0  # empty union
    assert torch.all(torch.isfinite(iou))


def test_thousands_of_random_boxes_against_shapely() -> None:
    # Wide spread of sizes and aspect ratios, float32, as a detector would produce.
    g = torch.Generator().manual_seed(1)
    n = 4000
    centers = torch.rand(n, 2, generator=g) * 600
    sizes = torch.exp(torch.rand(n, 2, generator=g) * 5)  # 1 .. 150 px
    angles = (torch.rand(n, 1, generator=g) - 0.5) * 2 * math.pi
    boxes = torch.cat([centers, sizes, angles], dim=1)
    a, b = boxes[: n // 2], boxes[n // 2 :]
    got = box_iou_rotated(a, b).double().numpy()
    # shapely's own spatial index finds every pair that touches; all other pairs must be exactly 0.
    pa, pb = obb_to_shapely(a.double()), obb_to_shapely(b.double())
    ib, ia = shapely.STRtree(pa).query(pb, predicate="intersects")
    inter = shapely.area(shapely.intersection(pa[ia], pb[ib]))
    expected = inter / (shapely.area(pa[ia]) + shapely.area(pb[ib]) - inter)
    assert len(ia) > 20000
    assert np.abs(got[ia, ib] - expected).max() <= 1e-4
    rest = np.ones_like(got, dtype=bool)
    rest[ia, ib] = False
    assert (got[rest] == 0).all()


def test_perturbed_copies_near_coincidence() -> None:
    # Nearly identical boxes stress the inside tests and edge crossings most.
    base = random_boxes(500, seed=2)
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([1e-6, 1e-6, 1e-6, 1e-6, 1e-7], dtype=torch.float64)
    other = base + torch.randn(base.shape, generator=g, dtype=torch.float64) * scale
    got = box_iou_rotated(base, other, aligned=True).numpy()
    expected = box_iou_rotated_shapely(base, other, aligned=True)
    assert np.abs(got - expected).max() <= 1e-6
    got32 = box_iou_rotated(base.float(), other.float(), aligned=True).double().numpy()
    assert np.abs(got32 - expected).max() <= 1e-4


def test_iof_and_aligned_modes() -> None:
    a = random_boxes(50, seed=4)
    b = random_boxes(50, seed=5)
    pa, pb = obb_to_shapely(a), obb_to_shapely(b)
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    iof = box_iou_rotated(a, b, mode="iof").numpy()
    assert np.allclose(iof, inter / shapely.area(pa)[:, None], atol=1e-9)
    full = box_iou_rotated(a, b)
    assert torch.allclose(box_iou_rotated(a, b, aligned=True), full.diagonal())
    assert torch.allclose(rotated_box_intersection(a, b), torch.from_numpy(inter.diagonal().copy()))
    with pytest.raises(ValueError, match="aligned"):
        box_iou_rotated(a, b[:3], aligned=True)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        box_iou_rotated(a[:, :4], b)
    assert box_iou_rotated(a[:0], b).shape == (0, 50)


def test_iou_gradients() -> None:
    a = torch.tensor([[10.0, 10.0, 6.0, 3.0, 0.3], [0.0, 0.0, 4.0, 4.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[11.0, 10.5, 5.0, 4.0, -0.4], [1.0, 1.5, 3.0, 5.0, 0.8]], dtype=torch.float64)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: box_iou_rotated(x, y, aligned=True), (a, b))
    # Degenerate pairs still give finite gradients.
    c = special_boxes().requires_grad_(True)
    box_iou_rotated(c, c).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_intersection_polygon_vertices_are_inside_both_boxes() -> None:
    # Sanity of the construction itself: intersection area never exceeds either box area.
    a, b = random_boxes(400, seed=6), random_boxes(400, seed=7)
    inter = rotated_box_intersection(a, b)
    assert bool((inter <= a[:, 2] * a[:, 3] + 1e-9).all()) and bool((inter <= b[:, 2] * b[:, 3] + 1e-9).all())
    assert obb_to_poly(a).shape == (400, 8)
