"""Where the windows go over a raster, in which order, and how the work splits into strips and shares.

Per axis (raster size ``L``, window ``w``, overlap ``o``): ``n = ceil((L - w) / (w - o)) + 1`` windows, spread
evenly between ``0`` and ``L - w`` (:func:`rsvit.ops.windows.spread_starts`), so neighbours overlap by at
least ``o`` pixels and the last window ends exactly at the border (no padding, no half-empty windows). A
raster smaller than the window gets one window of the raster's size on that axis. Spreading evenly, rather
than shifting only the last window back, keeps every overlap close to ``o``: the rows kept in memory between
window rows depend on the overlap.

Windows run row by row, left to right. A *strip* is the band of output rows ``[start of window row i, start
of window row i + 1)``: it is final once window row ``i`` has run, which is the unit of writing, resuming and
sharing work between processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rsvit.ops.windows import spread_starts

__all__ = ["Window", "WindowPlan", "axis_starts"]


axis_starts = spread_starts  # the plan's name for its rule (see rsvit.ops.windows)


@dataclass(frozen=True)
class Window:
    """One window of the plan: its position in the run order and its pixel rectangle."""

    index: int
    row: int  # window row (= strip) index
    col: int
    y0: int
    x0: int
    height: int
    width: int

    @property
    def y1(self) -> int:
        return self.y0 + self.height

    @property
    def x1(self) -> int:
        return self.x0 + self.width


@dataclass(frozen=True)
class WindowPlan:
    """The windows over a ``height`` x ``width`` raster; build it with :meth:`create`."""

    height: int
    width: int
    window_height: int
    window_width: int
    overlap: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @classmethod
    def create(cls, height: int, width: int, window: int = 512, overlap: int = 128) -> WindowPlan:
        if overlap >= window:
            raise ValueError(
                f"overlap ({overlap}) must be smaller than the window ({window}); "
                "e.g. --window 512 --overlap 128"
            )
        return cls(
            height=height,
            width=width,
            window_height=min(window, height),
            window_width=min(window, width),
            overlap=overlap,
            row_starts=axis_starts(height, window, overlap),
            col_starts=axis_starts(width, window, overlap),
        )

    @property
    def n_rows(self) -> int:
        """Number of window rows, which is also the number of strips."""
        return len(self.row_starts)

    @property
    def n_cols(self) -> int:
        return len(self.col_starts)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def window(self, index: int) -> Window:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range 0..{len(self) - 1}")
        row, col = divmod(index, self.n_cols)
        return Window(
            index, row, col, self.row_starts[row], self.col_starts[col], self.window_height, self.window_width
        )

    def __iter__(self) -> Iterator[Window]:
        return (self.window(i) for i in range(len(self)))

    def windows_of_row(self, row: int) -> range:
        """Indices of the windows of one window row."""
        return range(row * self.n_cols, (row + 1) * self.n_cols)

    def strip_rows(self, strip: int) -> tuple[int, int]:
        """Output rows ``[r0, r1)`` that are final once window row ``strip`` has run."""
        if not 0 <= strip < self.n_rows:
            raise IndexError(f"strip {strip} out of range 0..{self.n_rows - 1}")
        r0 = 0 if strip == 0 else self.row_starts[strip]
        r1 = self.height if strip == self.n_rows - 1 else self.row_starts[strip + 1]
        return r0, r1

    def first_row_for_strip(self, strip: int) -> int:
        """The earliest window row contributing to ``strip`` (it must run again when resuming there)."""
        r0, _ = self.strip_rows(strip)
        row = strip
        while row > 0 and self.row_starts[row - 1] + self.window_height > r0:
            row -= 1
        return row

    def shares(self, parts: int) -> list[range]:
        """Contiguous, balanced ranges of strips, one per process (some empty when strips are fewer)."""
        if parts < 1:
            raise ValueError(f"parts must be positive, got {parts}")
        bounds = [round(k * self.n_rows / parts) for k in range(parts + 1)]
        return [range(bounds[k], bounds[k + 1]) for k in range(parts)]

    def windows_for_strips(self, strips: range) -> range:
        """Window indices to run so that the given contiguous strips come out complete."""
        if len(strips) == 0:
            return range(0)
        first = self.first_row_for_strip(strips.start)
        return range(first * self.n_cols, strips.stop * self.n_cols)
