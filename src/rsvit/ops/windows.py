"""Where windows start along one axis of an image: the rules rsvit uses, side by side.

Every rule takes the axis length ``size``, the window length ``window`` and a spacing setting, and returns
the start offsets of the windows in increasing order. All of them put the first window at 0, end the last
one exactly at the border and give an axis no longer than the window a single window at 0 (whether that
window is clamped to the axis or padded is the caller's business).

* :func:`stride_starts` -- a fixed step, the last window moved back onto the border. This is the
  mmsegmentation ``slide`` test mode (:mod:`rsvit.models.sliding_window`, step = ``stride``) and also the
  DOTA devkit split (:mod:`rsvit.data.detection.split`, step = ``patch_size - gap``): both give
  ``ceil((size - window) / step) + 1`` windows at ``0, step, 2 * step, ...`` and one at ``size - window``.
  Every overlap is ``window - step`` except the last one, which is larger.
* :func:`spread_starts` -- the fewest windows whose neighbours overlap by at least ``overlap``, spread
  evenly (:mod:`rsvit.inference.plan`): ``n = ceil((size - window) / (window - overlap)) + 1`` and window
  ``k`` starts at ``round(k * (size - window) / (n - 1))``. The same count as the strided rule for
  ``step = window - overlap``, but every overlap stays close to ``overlap`` instead of piling the excess
  into the last one, which keeps the rows a streaming blender holds in memory small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pair_of_ints", "sliding_windows", "spread_starts", "stride_starts", "window_starts"]


def stride_starts(size: int, window: int, stride: int) -> list[int]:
    """Windows every ``stride`` pixels, the last one shifted back to end at the border.

    Args:
        size: axis length in pixels (>= 0).
        window: window length in pixels (>= 1).
        stride: step between window starts, ``1 <= stride <= window`` (a larger step would skip pixels).

    Returns:
        ``[0, stride, 2 * stride, ..., size - window]`` (``[0]`` when ``size <= window``).
    """
    if size < 0 or window < 1:
        raise ValueError(f"need size >= 0 and window >= 1, got size={size}, window={window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window], got stride={stride} for window={window}")
    n = -(-max(size - window, 0) // stride) + 1
    return [max(min(i * stride + window, size) - window, 0) for i in range(n)]


def spread_starts(size: int, window: int, overlap: int) -> tuple[int, ...]:
    """The fewest windows overlapping by at least ``overlap`` pixels, spread evenly over the axis.

    Args:
        size: axis length in pixels (>= 1).
        window: window length in pixels (>= 1).
        overlap: minimum overlap of neighbouring windows, ``0 <= overlap < window``.

    Returns:
        Start offsets from ``0`` to ``size - window`` (``(0,)`` when ``size <= window``).
    """
    if size < 1:
        raise ValueError(f"raster size must be positive, got {size}")
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got overlap={overlap} for window={window}")
    if size <= window:
        return (0,)
    n = math.ceil((size - window) / (window - overlap)) + 1
    span = size - window
    return tuple(round(k * span / (n - 1)) for k in range(n))


def pair_of_ints(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``value`` as a positive ``(height, width)`` pair; an int is used for both."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair  # type: ignore[return-value]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (see the module docstring for the rule)."""
    if stride > crop:
        raise ValueError(f"stride ({stride}) larger than the crop ({crop}) would leave pixels uncovered")
    return stride_starts(size, crop, stride)


def sliding_windows(
    image_size: Sequence[int], crop_size: int | Sequence[int], stride: int | Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` in the official order (row by row, left to right), inside the image."""
    height, width = (int(v) for v in image_size)
    crop_h, crop_w = pair_of_ints(crop_size, "crop_size")
    stride_h, stride_w = pair_of_ints(stride, "stride")
    return [
        (y0, min(y0 + crop_h, height), x0, min(x0 + crop_w, width))
        for y0 in window_starts(height, crop_h, stride_h)
        for x0 in window_starts(width, crop_w, stride_w)
    ]
