"""Blending overlapping window outputs with smooth weights, keeping only a band of the output in memory.

Weights: each window weighs its output with a separable ramp ``w(y) * w(x)``. Along an axis the ramp rises
as ``sin^2`` over the overlap with the neighbouring window and is 1 elsewhere, including sides on the raster
border (there is no neighbour to hand over to). It is > 0 at every pixel of the window, so every pixel is
covered, and where two windows overlap their ramps add up to 1: the low-confidence border of one window
hands over smoothly to the interior of the next, which removes seams. The blended output is
``sum(w * out) / sum(w)``.

Memory: the raster is cut into *cells* along every window edge; each cell is covered by a fixed set of
windows. A cell's accumulator is created when its first window arrives and handed to ``emit`` (then freed)
when its last one has been added. In row-major order the live cells are the rows shared with the next
window row (overlap x raster width) plus part of the current window row, so memory depends on the window,
the overlap and the raster width, never on the raster height. For ``C`` output channels that is about
``4 * C * (overlap + window) * width`` bytes at most (e.g. 2 classes, window 1024, overlap 128, 20000 px
wide: ~30 MB at steady state).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rsvit.inference.plan import WindowPlan

__all__ = ["BlendAccumulator", "axis_weights", "ramp"]

# emit(r0, r1, c0, c1, blended (C, h, w) float32 array, valid (h, w) bool array or None)
EmitFn = Callable[[int, int, int, int, np.ndarray, np.ndarray | None], None]


def ramp(length: int) -> np.ndarray:
    """``sin^2`` ramp rising over ``length`` pixels, sampled at pixel centres (never 0, never 1)."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / length
    return np.sin(0.5 * math.pi * t) ** 2


def axis_weights(starts: tuple[int, ...], size: int) -> list[np.ndarray]:
    """Per-window weights along one axis for windows of ``size`` starting at ``starts``."""
    out = []
    for i, start in enumerate(starts):
        w = np.ones(size, dtype=np.float64)
        if i > 0:
            lead = starts[i - 1] + size - start  # overlap with the previous window
            if lead > 0:
                w[:lead] = np.minimum(w[:lead], ramp(lead))
        if i < len(starts) - 1:
            trail = start + size - starts[i + 1]  # overlap with the next window
            if trail > 0:
                w[size - trail :] = np.minimum(w[size - trail :], ramp(trail)[::-1])
        out.append(w)
    return out


@dataclass
class _Cell:
    total: np.ndarray | None  # (C, h, w) weighted sum of outputs; None while only skipped windows came
    valid: np.ndarray | None
    remaining: int


def _edges(starts: tuple[int, ...], size: int, extent: int) -> list[int]:
    return sorted({0, extent, *starts, *(s + size for s in starts)})


class BlendAccumulator:
    """Accumulates window outputs of a :class:`WindowPlan` and emits finished cells of the blended map.

    Args:
        plan: the window plan.
        channels: output channels per window.
        emit: receives every finished cell once (see ``EmitFn``), in row-major window order.
        rows: only cells inside these output rows are kept and emitted (a process's share, or the strips
            left to do when resuming); both ends must be strip boundaries.
    """

    def __init__(self, plan: WindowPlan, channels: int, emit: EmitFn, rows: tuple[int, int] | None = None):
        self.plan = plan
        self.channels = channels
        self.emit = emit
        self.rows = rows or (0, plan.height)
        self.row_edges = _edges(plan.row_starts, plan.window_height, plan.height)
        self.col_edges = _edges(plan.col_starts, plan.window_width, plan.width)
        for edge in self.rows:
            if edge not in self.row_edges:
                raise ValueError(f"row {edge} is not a cell boundary of the plan")
        wy = axis_weights(plan.row_starts, plan.window_height)
        wx = axis_weights(plan.col_starts, plan.window_width)
        self._wy = [w.astype(np.float32) for w in wy]
        self._wx = [w.astype(np.float32) for w in wx]
        # Sum of all weights at each pixel is separable: (sum of row weights) x (sum of column weights).
        # It is summed per cell when needed, never materialised over the whole height.
        self._sy = [(s, s + plan.window_height) for s in plan.row_starts]
        self._sx = [(s, s + plan.window_width) for s in plan.col_starts]
        self._cells: dict[tuple[int, int], _Cell] = {}

    def _norm(self, weights: list[np.ndarray], spans: list[tuple[int, int]], a: int, b: int) -> np.ndarray:
        total = np.zeros(b - a, dtype=np.float32)
        for w, (s, e) in zip(weights, spans, strict=True):
            lo, hi = max(a, s), min(b, e)
            if lo < hi:
                total[lo - a : hi - a] += w[lo - s : hi - s]
        return total

    def _blocks(self, edges: list[int], start: int, size: int) -> range:
        i0 = bisect.bisect_left(edges, start)
        i1 = bisect.bisect_left(edges, start + size)
        return range(i0, i1)

    def _cover_count(self, starts: tuple[int, ...], size: int, a: int) -> int:
        return sum(1 for s in starts if s <= a < s + size)

    @property
    def live_cells(self) -> int:
        return len(self._cells)

    def live_bytes(self) -> int:
        """Bytes held by unfinished cells (for tests and diagnostics)."""
        return sum(
            (c.total.nbytes if c.total is not None else 0) + (c.valid.nbytes if c.valid is not None else 0)
            for c in self._cells.values()
        )

    def add(self, index: int, output: np.ndarray | None, valid: np.ndarray | None) -> None:
        """Adds the output ``(C, h, w)`` of window ``index``; ``None`` for a skipped (all-nodata) window."""
        win = self.plan.window(index)
        if output is not None and tuple(output.shape) != (self.channels, win.height, win.width):
            raise ValueError(
                f"window output has shape {tuple(output.shape)}, "
                f"expected {(self.channels, win.height, win.width)}"
            )
        wy, wx = self._wy[win.row], self._wx[win.col]
        r_lo, r_hi = self.rows
        for p in self._blocks(self.row_edges, win.y0, win.height):
            r0, r1 = self.row_edges[p], self.row_edges[p + 1]
            if r1 <= r_lo or r0 >= r_hi:
                continue
            ys = slice(r0 - win.y0, r1 - win.y0)
            for q in self._blocks(self.col_edges, win.x0, win.width):
                c0, c1 = self.col_edges[q], self.col_edges[q + 1]
                xs = slice(c0 - win.x0, c1 - win.x0)
                cell = self._cells.get((p, q))
                if cell is None:
                    count = self._cover_count(self.plan.row_starts, self.plan.window_height, r0) * (
                        self._cover_count(self.plan.col_starts, self.plan.window_width, c0)
                    )
                    cell_valid = None if valid is None else valid[ys, xs]
                    if count == 1:
                        # Covered by this window alone: its weight is 1 there, nothing to blend or keep.
                        if output is None:
                            self._finish(r0, r1, c0, c1, _Cell(None, cell_valid, 0))
                        else:
                            self.emit(r0, r1, c0, c1, output[:, ys, xs], cell_valid)
                        continue
                    cell_valid = None if cell_valid is None else cell_valid.copy()
                    cell = self._cells[(p, q)] = _Cell(None, cell_valid, count)
                if output is not None:
                    part = output[:, ys, xs] * (wy[ys, None] * wx[None, xs])
                    if cell.total is None:
                        cell.total = part
                    else:
                        cell.total += part
                cell.remaining -= 1
                if cell.remaining == 0:
                    del self._cells[(p, q)]
                    self._finish(r0, r1, c0, c1, cell)

    def _finish(self, r0: int, r1: int, c0: int, c1: int, cell: _Cell) -> None:
        if cell.total is None:  # every covering window was skipped: all nodata
            total = np.zeros((self.channels, r1 - r0, c1 - c0), dtype=np.float32)
            valid = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        else:
            norm = self._norm(self._wy, self._sy, r0, r1)[:, None] * self._norm(self._wx, self._sx, c0, c1)
            total = cell.total
            total /= norm
            valid = cell.valid
        self.emit(r0, r1, c0, c1, total, valid)
