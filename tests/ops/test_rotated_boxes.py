"""Representations and angle conventions, checked against shapely geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import shapely.affinity
import torch

from rsvit.ops import (
    RotatedBoxes,
    convert_angle_convention,
    hbox_to_obb,
    obb_to_hbox,
    obb_to_poly,
    pairwise_iou,
    poly_area,
    poly_to_hbox,
    poly_to_obb,
    regularize_obb,
)
from rsvit.ops.reference import box_iou_rotated_shapely


def random_boxes(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g, dtype=dtype) * 200
    sizes = torch.rand(n, 2, generator=g, dtype=dtype) * 40 + 1
    angles = (torch.rand(n, 1, generator=g, dtype=dtype) - 0.5) * 4 * math.pi
    return torch.cat([centers, sizes, angles], dim=1)


def shapely_rect(box: torch.Tensor) -> shapely.Polygon:
    """The rectangle of a box built independently: an axis-aligned box rotated about its centre."""
    cx, cy, w, h, a = (float(v) for v in box)
    rect = shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    # In y-down pixel coordinates a positive angle turns +x towards +y, which is shapely's
    # counter-clockwise rotation in its y-up frame.
    return shapely.affinity.rotate(rect, a, origin=(cx, cy), use_radians=True)


def same_rect(p: shapely.Polygon, q: shapely.Polygon, tol: float = 1e-7) -> bool:
    return shapely.area(shapely.symmetric_difference(p, q)) <= tol * max(p.area, q.area, 1.0)


def test_obb_to_poly_matches_rotated_shapely_box() -> None:
    boxes = random_boxes(200)
    polys = obb_to_poly(boxes).reshape(-1, 4, 2).numpy()
    for box, corners in zip(boxes, polys, strict=True):
        assert same_rect(shapely.Polygon(corners), shapely_rect(box))
    # Corners come clockwise on screen, i.e. with a positive shoelace area when y points down.
    assert torch.allclose(poly_area(obb_to_poly(boxes)), boxes[:, 2] * boxes[:, 3])


def test_first_corner_and_order_for_axis_aligned_box() -> None:
    poly = obb_to_poly(torch.tensor([[10.0, 20.0, 4.0, 2.0, 0.0]]))
    expected = torch.tensor([[8.0, 19.0, 12.0, 19.0, 12.0, 21.0, 8.0, 21.0]])
    assert torch.equal(poly, expected)


@pytest.mark.parametrize(
    ("convention", "low", "high", "long_side_first"),
    [("le90", -math.pi / 2, math.pi / 2, True), ("le135", -math.pi / 4, 3 * math.pi / 4, True)],
)
def test_long_edge_conventions(convention: str, low: float, high: float, long_side_first: bool) -> None:
    boxes = random_boxes(500, seed=1)
    reg = regularize_obb(boxes, convention)
    assert bool((reg[:, 4] >= low).all()) and bool((reg[:, 4] < high).all())
    assert bool((reg[:, 2] >= reg[:, 3]).all()) == long_side_first
    for a, b in zip(boxes, reg, strict=True):
        assert same_rect(shapely_rect(a), shapely_rect(b))


def test_oc_convention() -> None:
    boxes = random_boxes(500, seed=2)
    reg = regularize_obb(boxes, "oc")
    assert bool((reg[:, 4] > 0).all()) and bool((reg[:, 4] <= math.pi / 2 + 1e-12).all())
    for a, b in zip(boxes, reg, strict=True):
        assert same_rect(shapely_rect(a), shapely_rect(b))
    # An axis-aligned box has angle pi/2 in oc (0 is excluded), so its sides swap.
    axis = regularize_obb(torch.tensor([[0.0, 0.0, 6.0, 2.0, 0.0]], dtype=torch.float64), "oc")
    assert torch.allclose(axis, torch.tensor([[0.0, 0.0, 2.0, 6.0, math.pi / 2]], dtype=torch.float64))


@pytest.mark.parametrize("via", ["le135", "oc"])
def test_conversion_round_trip(via: str) -> None:
    boxes = regularize_obb(random_boxes(300, seed=3), "le90")
    back = convert_angle_convention(convert_angle_convention(boxes, "le90", via), via, "le90")
    assert torch.allclose(back, boxes, atol=1e-9)
    with pytest.raises(ValueError, match="unknown angle convention"):
        convert_angle_convention(boxes, "xyz", "le90")  # type: ignore[arg-type]


def test_poly_to_obb_is_minimum_area_rectangle() -> None:
    g = np.random.default_rng(4)
    for k in (4, 6):
        pts = g.uniform(0, 100, size=(300, k, 2))
        obb = poly_to_obb(torch.from_numpy(pts.reshape(300, -1)))
        for points, box in zip(pts, obb, strict=True):
            env = shapely.oriented_envelope(shapely.MultiPoint(points))
            rect = shapely_rect(box)
            assert float(box[2] * box[3]) == pytest.approx(env.area, rel=1e-9, abs=1e-9)
            # The rectangle encloses every point (up to rounding).
            assert rect.buffer(1e-7).contains(shapely.MultiPoint(points))


def test_poly_to_obb_inverts_obb_to_poly() -> None:
    boxes = random_boxes(300, seed=5)
    again = poly_to_obb(obb_to_poly(boxes), "le90")
    # (Compared by parameters: GEOS can return an empty intersection for two copies of a polygon
    # that differ only by rounding.)
    assert torch.allclose(again, regularize_obb(boxes, "le90"), atol=1e-7)


def test_poly_to_obb_degenerate_points() -> None:
    same = torch.tensor([[3.0, 4.0] * 4])
    assert torch.allclose(poly_to_obb(same)[0, :4], torch.tensor([3.0, 4.0, 0.0, 0.0]))
    segment = torch.tensor([[0.0, 0.0, 10.0, 0.0, 10.0, 0.0, 0.0, 0.0]])
    box = poly_to_obb(segment)[0]
    assert float(box[2] * box[3]) == 0.0 and float(box[2]) == pytest.approx(10.0)


def test_horizontal_conversions_match_shapely_bounds() -> None:
    boxes = random_boxes(100, seed=6)
    hb = obb_to_hbox(boxes)
    bounds = np.array([shapely_rect(b).bounds for b in boxes])
    assert np.allclose(hb.numpy(), bounds, atol=1e-9)
    assert torch.allclose(poly_to_hbox(obb_to_poly(boxes)), hb, atol=1e-9)
    back = hbox_to_obb(hb)
    assert torch.allclose(obb_to_hbox(back), hb, atol=1e-9)
    assert bool((back[:, 2] >= back[:, 3]).all())


def test_rotated_boxes_container() -> None:
    t = random_boxes(10, seed=7).float()
    rb = RotatedBoxes(t)
    assert len(rb) == 10 and rb.tensor.dtype == torch.float32
    assert torch.equal(rb.area(), t[:, 2] * t[:, 3])
    assert len(rb[2]) == 1 and len(rb[2:5]) == 3 and len(rb[rb.area() > 100]) == int((rb.area() > 100).sum())
    assert len(RotatedBoxes.cat([rb, rb[:3]])) == 13
    assert len(RotatedBoxes([])) == 0
    empty = RotatedBoxes(torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0]]))
    assert empty.nonempty().tolist() == [False, True]
    assert empty.nonempty(threshold=2.0).tolist() == [False, False]
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        RotatedBoxes(torch.zeros(3, 4))
    iou = pairwise_iou(rb, rb[:4])
    assert iou.shape == (10, 4)
    assert np.allclose(iou.numpy(), box_iou_rotated_shapely(rb.tensor, rb[:4].tensor), atol=1e-4)


def test_rotated_boxes_clip() -> None:
    image = shapely.box(0, 0, 100, 50)  # width 100, height 50
    boxes = torch.tensor(
        [
            [95.0, 10.0, 20.0, 10.0, 0.0],  # sticks out on the right
            [10.0, 48.0, 30.0, 8.0, math.pi / 2 + 1e-3],  # nearly vertical, sticks out at the bottom
            [50.0, 25.0, 200.0, 10.0, 0.6],  # strongly rotated: left as is
            [50.0, 25.0, 10.0, 10.0, 0.0],  # inside
        ],
        dtype=torch.float64,
    )
    clipped = RotatedBoxes(boxes).clip((50, 100)).tensor
    # Nearly axis-aligned boxes are snapped to their axis-aligned extent, then cut by the image.
    expected = {
        0: shapely.box(85, 5, 105, 15),
        1: shapely.box(6, 33, 14, 63),
        3: shapely.box(45, 20, 55, 30),
    }
    for i, rect in expected.items():
        assert same_rect(shapely_rect(clipped[i]), shapely.intersection(rect, image), tol=1e-9)
    assert torch.equal(clipped[2], boxes[2])


def test_box_type_lives_in_structures_and_the_old_path_warns() -> None:
    import rsvit.ops
    import rsvit.ops.rotated_boxes as old_module
    import rsvit.structures as structures

    assert rsvit.ops.RotatedBoxes is structures.RotatedBoxes
    with pytest.warns(DeprecationWarning, match=r"rsvit\.structures\.rotated_boxes\.poly_to_obb"):
        moved = old_module.poly_to_obb
    assert moved is structures.poly_to_obb
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = old_module.no_such_name
