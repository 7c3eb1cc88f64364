"""The named window rules, checked against the rules as the three callers state them."""

from __future__ import annotations

import itertools
import math

import pytest

from rsvit.data.detection.split import window_origins
from rsvit.inference.plan import WindowPlan, axis_starts
from rsvit.models.sliding_window import sliding_windows, window_starts
from rsvit.ops.windows import spread_starts, stride_starts

SIZES = [0, 1, 5, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 1000, 1111, 3000]


def _mmseg_slide(size: int, crop: int, stride: int) -> list[int]:
    """mmsegmentation's slide mode as its test code writes it: grid count, then clamp the window end."""
    grids = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(grids)]


def _devkit_split(length: int, patch: int, gap: int) -> list[int]:
    """The DOTA devkit split: step by ``patch - gap`` while a whole patch fits, then one at the border."""
    if length <= patch:
        return [0]
    starts, left = [], 0
    while left + patch < length:
        starts.append(left)
        left += patch - gap
    return [*starts, length - patch]


@pytest.mark.parametrize(("window", "stride"), [(64, 64), (64, 48), (128, 96), (128, 1), (1024, 824)])
def test_stride_starts_is_the_mmseg_slide_rule(window: int, stride: int) -> None:
    for size in SIZES:
        starts = stride_starts(size, window, stride)
        assert starts == _mmseg_slide(size, window, stride)
        assert starts[0] == 0 and starts[-1] == max(size - window, 0)
        steps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(step == stride for step in steps[:-1]) and all(0 < step <= stride for step in steps)


@pytest.mark.parametrize(("patch", "gap"), [(1024, 200), (512, 128), (64, 0), (64, 63)])
def test_stride_starts_is_the_dota_split_rule_with_step_patch_minus_gap(patch: int, gap: int) -> None:
    for size in SIZES:
        assert stride_starts(size, patch, patch - gap) == _devkit_split(size, patch, gap)


@pytest.mark.parametrize(("window", "overlap"), [(512, 128), (256, 0), (100, 60), (7, 6)])
def test_spread_starts_spreads_the_strided_count_evenly(window: int, overlap: int) -> None:
    for size in SIZES[1:]:
        starts = spread_starts(size, window, overlap)
        if size <= window:
            assert starts == (0,)
            continue
        assert len(starts) == len(stride_starts(size, window, window - overlap))
        assert len(starts) == math.ceil((size - window) / (window - overlap)) + 1
        assert starts[0] == 0 and starts[-1] == size - window
        steps = [b - a for a, b in itertools.pairwise(starts)]
        assert max(steps) - min(steps) <= 1  # evenly spread: steps differ by rounding only
        assert all(window - step >= overlap for step in steps)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="stride"):
        stride_starts(100, 64, 65)
    with pytest.raises(ValueError, match="stride"):
        stride_starts(100, 64, 0)
    with pytest.raises(ValueError, match="window"):
        stride_starts(100, 0, 1)
    with pytest.raises(ValueError, match="overlap"):
        spread_starts(100, 64, 64)
    with pytest.raises(ValueError, match="size"):
        spread_starts(0, 64, 0)


def test_the_three_callers_use_the_named_rules() -> None:
    for size in SIZES[1:]:
        assert window_starts(size, 128, 96) == stride_starts(size, 128, 96)
        assert window_origins(size, 128, 32) == stride_starts(size, 128, 96)
        assert axis_starts(size, 128, 32) == spread_starts(size, 128, 32)
    windows = sliding_windows((200, 300), 128, 96)
    assert [(y0, x0) for y0, _, x0, _ in windows] == [
        (y, x) for y in stride_starts(200, 128, 96) for x in stride_starts(300, 128, 96)
    ]
    plan = WindowPlan.create(200, 300, window=128, overlap=32)
    assert plan.row_starts == spread_starts(200, 128, 32) and plan.col_starts == spread_starts(300, 128, 32)
