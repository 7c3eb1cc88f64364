"""Window plan (coverage, order, strips, shares) and the blending accumulator's bookkeeping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rsvit.inference.blend import BlendAccumulator, axis_weights
from rsvit.inference.plan import WindowPlan, axis_starts


@pytest.mark.parametrize("size", [1, 100, 512, 513, 1000, 1537, 5000])
@pytest.mark.parametrize(("window", "overlap"), [(512, 128), (256, 0), (100, 60)])
def test_axis_starts_cover_every_pixel_with_the_requested_overlap(size, window, overlap):
    starts = axis_starts(size, window, overlap)
    length = min(window, size)
    covered = np.zeros(size, dtype=int)
    for s in starts:
        assert s >= 0 and s + length <= size  # inside the raster, no padding
        covered[s : s + length] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] + length == size
    assert list(starts) == sorted(set(starts))
    for a, b in itertools.pairwise(starts):
        assert a + length - b >= overlap  # neighbours overlap by at least the requested amount


def test_axis_starts_reject_bad_settings():
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(1000, 256, 256)
    with pytest.raises(ValueError, match="window"):
        axis_starts(1000, 0, 0)


def test_plan_order_strips_and_shares():
    plan = WindowPlan.create(1300, 900, window=400, overlap=100)
    windows = list(plan)
    assert [w.index for w in windows] == list(range(len(plan)))
    assert [(w.y0, w.x0) for w in windows] == sorted((w.y0, w.x0) for w in windows)  # row-major
    rows = [plan.strip_rows(i) for i in range(plan.n_rows)]
    assert rows[0][0] == 0 and rows[-1][1] == plan.height
    assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))  # strips tile the rows
    for parts in (1, 2, 3, plan.n_rows):
        shares = plan.shares(parts)
        assert [s for share in shares for s in share] == list(range(plan.n_rows))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # A share starting at strip 2 must also run the window row above it (it overlaps strip 2).
    needed = plan.windows_for_strips(range(2, 3))
    assert needed.start == plan.first_row_for_strip(2) * plan.n_cols < 2 * plan.n_cols
    assert needed.stop == 3 * plan.n_cols


def test_small_raster_gets_one_window_of_its_size():
    plan = WindowPlan.create(12, 13, window=512, overlap=128)
    assert len(plan) == 1 and (plan.window_height, plan.window_width) == (12, 13)


def test_axis_weights_are_positive_and_hand_over_smoothly():
    starts = axis_starts(1000, 256, 64)
    weights = axis_weights(starts, 256)
    total = np.zeros(1000)
    for s, w in zip(starts, weights, strict=True):
        assert w.min() > 0 and w.max() <= 1
        total[s : s + 256] += w
    # Two overlapping ramps add up to one: the weights are a partition of unity along the axis.
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def _run(plan: WindowPlan, channels: int, values=None, rows=None):
    """Feeds each window a known field; returns the assembled output, emission counts and peak memory."""
    out = np.full((channels, plan.height, plan.width), np.nan, dtype=np.float32)
    hits = np.zeros((plan.height, plan.width), dtype=int)

    def emit(r0, r1, c0, c1, blended, valid):
        out[:, r0:r1, c0:c1] = blended
        hits[r0:r1, c0:c1] += 1

    acc = BlendAccumulator(plan, channels, emit, rows=rows)
    peak = 0
    for win in plan:
        field = np.ones((channels, win.height, win.width), np.float32) if values is None else values(win)
        acc.add(win.index, field, None)
        peak = max(peak, acc.live_bytes())
    assert acc.live_cells == 0
    return out, hits, peak


def test_every_pixel_is_emitted_once_and_blending_is_a_weighted_mean():
    plan = WindowPlan.create(700, 530, window=200, overlap=50)
    out, hits, _ = _run(plan, 2)
    assert (hits == 1).all()
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)  # a constant prediction stays constant
    # Windows that agree on a smooth field reproduce it exactly, whatever the weights.
    yy, xx = np.mgrid[0:700, 0:530].astype(np.float32)
    truth = np.stack([yy * 0.01 + xx * 0.02, yy - xx])

    def field(win):
        return truth[:, win.y0 : win.y1, win.x0 : win.x1].copy()

    out, _, _ = _run(plan, 2, values=field)
    np.testing.assert_allclose(out, truth, rtol=1e-5, atol=1e-3)


def test_held_memory_depends_on_width_and_window_not_on_height():
    # Heights of the form window + k * stride, so both plans have exactly the same overlaps.
    short, tall = 256 + 7 * 192, 256 + 31 * 192
    peaks = {}
    for height, width in [(short, 800), (tall, 800), (short, 1600)]:
        plan = WindowPlan.create(height, width, window=256, overlap=64)
        peaks[height, width] = _run(plan, 3)[2]
    assert peaks[short, 800] == peaks[tall, 800]  # four times taller: the same live cells
    assert peaks[short, 1600] > peaks[short, 800]  # wider rows do hold more
    assert peaks[tall, 800] < 3 * 4 * (256 + 64) * 800  # about (window + overlap) rows of floats at most


def test_a_share_emits_only_its_rows():
    plan = WindowPlan.create(900, 300, window=200, overlap=50)
    r0, r1 = plan.strip_rows(2)[0], plan.strip_rows(3)[1]
    _, hits, _ = _run(plan, 1, rows=(r0, r1))
    assert (hits[r0:r1] == 1).all()
    assert hits[:r0].sum() == 0 and hits[r1:].sum() == 0
