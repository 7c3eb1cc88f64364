"""Rotated RoIAlign: average bilinear samples of a rotated grid laid over each region of interest.

Each RoI ``(cx, cy, w, h, angle)`` is cut into ``out_h x out_w`` bins along its own axes; each bin is
the mean of ``grid_h x grid_w`` bilinear samples at the centres of a regular sub-grid. Sample
positions are computed in the RoI frame and rotated into the feature map. Every bin is then a weighted
sum of the feature-map pixels its samples touch (four per sample), and all bins are computed by one
``embedding_bag`` over the feature map laid out as a ``(pixels, C)`` table: one row read per tap, no
``(samples, C)`` temporaries. Gradients reach the features through the table and the RoI coordinates
through the bilinear weights.

ONNX has no weighted bag sum (the exporter's ``embedding_bag`` becomes a loop over bins that ONNX
Runtime runs one bin at a time), so graphs captured for ONNX inside :func:`tap_sums` sum the taps
instead: one gather of ``(bins, C)`` rows and one multiply-add per tap, the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RotatedRoIAlign", "multilevel_rotated_roi_align", "rotated_roi_align", "tap_sums"]

_TAP_SUMS = False


@contextmanager
def tap_sums() -> Iterator[None]:
    """Within the block, bins are summed tap by tap instead of by ``embedding_bag`` (for ONNX capture)."""
    global _TAP_SUMS
    previous, _TAP_SUMS = _TAP_SUMS, True
    try:
        yield
    finally:
        _TAP_SUMS = previous


def _rois_to_tensor(rois: Tensor | list[Tensor]) -> Tensor:
    if isinstance(rois, list | tuple):
        parts = []
        for i, r in enumerate(rois):
            if r.dim() != 2 or r.shape[-1] != 5:
                raise ValueError(f"rois[{i}] must have shape (K, 5), got {tuple(r.shape)}")
            parts.append(torch.cat([torch.full_like(r[:, :1], i), r], dim=1))
        if not parts:
            raise ValueError("rois is an empty list")
        return torch.cat(parts, dim=0)
    if rois.dim() != 2 or rois.shape[-1] != 6:
        raise ValueError(
            f"rois must have shape (K, 6) or be a list of (K_i, 5) tensors, got {tuple(rois.shape)}"
        )
    return rois


def _output_size(output_size: int | tuple[int, int]) -> tuple[int, int]:
    return (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)


def _check_batch(batch: Tensor, n: int) -> None:
    """Eager-only range check of the RoI batch indices (data-dependent, so skipped when traced)."""
    if not torch.compiler.is_compiling() and batch.numel() and bool(((batch < 0) | (batch >= n)).any()):
        raise ValueError(
            f"roi batch indices must be in [0, {n}), got range [{int(batch.min())}, {int(batch.max())}]"
        )


def _feature_table(maps: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """All maps' pixels as rows of one contiguous ``(sum N*H*W, C)`` table of ``dtype``, map after map.

    One copy per map does the layout change and the dtype conversion together.
    """
    c = maps[0].shape[1]
    table = maps[0].new_empty((sum(m.numel() // c for m in maps), c), dtype=dtype)
    start = 0
    for m in maps:
        n, _, h, w = m.shape
        table[start : start + n * h * w].view(n, h, w, c).copy_(m.permute(0, 2, 3, 1))
        start += n * h * w
    return table


def _roi_frame(
    rois: Tensor, scale: Tensor | float, aligned: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``cx, cy, w, h, angle`` of each RoI in feature-map pixels (scaled, shifted, clamped if unaligned)."""
    offset = 0.5 if aligned else 0.0
    cx = rois[:, 1] * scale - offset
    cy = rois[:, 2] * scale - offset
    rw = rois[:, 3] * scale
    rh = rois[:, 4] * scale
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    return cx, cy, rw, rh, rois[:, 5]


def _sample_points(
    frame: tuple[Tensor, ...], out_size: tuple[int, int], grid: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Sample positions ``x, y`` ``(R, out_h * gh, out_w * gw)`` in feature-map pixels, bin-major."""
    cx, cy, rw, rh, angle = frame
    out_h, out_w = out_size
    gh, gw = grid
    kw = {"device": cx.device, "dtype": cx.dtype}
    # Sub-grid positions in units of a bin, measured from the RoI's top-left corner.
    iy = (torch.arange(out_h, **kw).view(-1, 1) + (torch.arange(gh, **kw) + 0.5).view(1, -1) / gh).reshape(-1)
    ix = (torch.arange(out_w, **kw).view(-1, 1) + (torch.arange(gw, **kw) + 0.5).view(1, -1) / gw).reshape(-1)
    bh = (rh / out_h).view(-1, 1, 1)
    bw = (rw / out_w).view(-1, 1, 1)
    ly = -rh.view(-1, 1, 1) / 2 + iy.view(1, -1, 1) * bh  # (R, out_h*gh, 1)
    lx = -rw.view(-1, 1, 1) / 2 + ix.view(1, 1, -1) * bw  # (R, 1, out_w*gw)
    cos = torch.cos(angle).view(-1, 1, 1)
    sin = torch.sin(angle).view(-1, 1, 1)
    x = cx.view(-1, 1, 1) + lx * cos - ly * sin
    y = cy.view(-1, 1, 1) + lx * sin + ly * cos
    return x, y


def _bin_taps(
    x: Tensor,
    y: Tensor,
    first_row: Tensor,
    height: Tensor | int,
    width: Tensor | int,
    out_size: tuple[int, int],
    grid: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Table rows ``(R * out_h * out_w, gh * gw * 4)`` and weights of every bin's bilinear taps.

    ``x, y`` ``(R, out_h * gh, out_w * gw)`` are sample positions; ``first_row`` ``(R,)`` is the table row
    of pixel ``(0, 0)`` of each RoI's map and ``height``/``width`` its size (ints or ``(R,)`` tensors).
    Border rules of the reference kernel: samples more than one pixel outside weigh 0, samples in the
    band up to one pixel outside take the edge value.
    """
    r = x.shape[0]
    out_h, out_w = out_size
    gh, gw = grid
    if isinstance(height, Tensor):
        height, width = height.view(-1, 1, 1), width.view(-1, 1, 1)
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y = torch.minimum(y.clamp(min=0), height - 1) if isinstance(height, Tensor) else y.clamp(0, height - 1)
    x = torch.minimum(x.clamp(min=0), width - 1) if isinstance(width, Tensor) else x.clamp(0, width - 1)
    y0f, x0f = torch.floor(y), torch.floor(x)
    ly, lx = y - y0f, x - x0f
    y0, x0 = y0f.long(), x0f.long()
    y1 = torch.where(y0 < height - 1, y0 + 1, y0)
    x1 = torch.where(x0 < width - 1, x0 + 1, x0)
    hy, hx = 1 - ly, 1 - lx
    inside = (~outside).to(x.dtype) / (gh * gw)
    base = first_row.view(-1, 1, 1)
    row0, row1 = base + y0 * width, base + y1 * width
    rows = torch.stack([row0 + x0, row0 + x1, row1 + x0, row1 + x1], dim=-1)
    weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=-1) * inside.unsqueeze(-1)

    def per_bin(t: Tensor) -> Tensor:  # (R, out_h*gh, out_w*gw, 4) -> (R*out_h*out_w, gh*gw*4)
        return t.view(r, out_h, gh, out_w, gw, 4).permute(0, 1, 3, 2, 4, 5).reshape(r * out_h * out_w, -1)

    return per_bin(rows), per_bin(weights)


def _pool_table(table: Tensor, rows: Tensor, weights: Tensor, r: int, out_size: tuple[int, int]) -> Tensor:
    """``(R, C, out_h, out_w)`` weighted sums of ``table`` rows, one bag per bin."""
    if _TAP_SUMS:
        bins = table[rows[:, 0]] * weights[:, :1]
        for tap in range(1, rows.shape[1]):
            bins = bins + table[rows[:, tap]] * weights[:, tap : tap + 1]
    else:
        bins = F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    return bins.view(r, out_size[0], out_size[1], table.shape[1]).permute(0, 3, 1, 2)


def rotated_roi_align(
    input: Tensor,
    rois: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> Tensor:
    """Pool a fixed-size feature patch from each rotated region of interest.

    Args:
        input: ``(N, C, H, W)`` float feature map.
        rois: ``(K, 6)`` tensor ``(batch_index, cx, cy, w, h, angle)`` in input-image pixels, or a
            list of ``N`` tensors ``(K_i, 5)`` (the batch index is the list position). ``angle`` is in
            radians and rotates the RoI's ``w`` axis from +x towards +y (see
            :mod:`rsvit.structures.rotated_boxes`);
            output column ``j`` runs along ``w`` and row ``i`` along ``h``.
        output_size: ``(out_h, out_w)`` or a single int.
        spatial_scale: factor from image pixels to feature-map pixels (e.g. ``1/16``).
        sampling_ratio: samples per bin along each axis; ``<= 0`` uses ``ceil(h / out_h)`` and
            ``ceil(w / out_w)`` per RoI (at least 1).
        aligned: if True, pixel ``(i, j)`` of the feature map covers ``[j, j + 1)`` and its value sits at
            ``j + 0.5``, so RoI coordinates are shifted by ``-0.5`` after scaling. If False, no shift and
            RoI sides are clamped to at least one feature pixel.

    Returns:
        ``(K, C, out_h, out_w)`` tensor of the input's dtype and device. Samples more than one pixel
        outside the map contribute zeros; samples within the border band use the nearest edge value.
    """
    if input.dim() != 4:
        raise ValueError(f"input must have shape (N, C, H, W), got {tuple(input.shape)}")
    # Half-precision maps: positions and sums in float32 (sample positions need more than 8-11 mantissa
    # bits on a 256-px map); the result is cast back.
    dtype = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    rois = _rois_to_tensor(rois).to(dtype=dtype, device=input.device)
    out_size = _output_size(output_size)
    n, c, height, width = input.shape
    k = rois.shape[0]
    if k == 0:
        return input.new_zeros((0, c, *out_size))
    batch = rois[:, 0].long()
    _check_batch(batch, n)
    frame = _roi_frame(rois, spatial_scale, aligned)
    table = _feature_table([input], dtype)
    first_row = batch * (height * width)
    if sampling_ratio > 0:
        grid = (sampling_ratio, sampling_ratio)
        x, y = _sample_points(frame, out_size, grid)
        rows, weights = _bin_taps(x, y, first_row, height, width, out_size, grid)
        return _pool_table(table, rows, weights, k, out_size).to(input.dtype)
    if torch.compiler.is_compiling():
        raise ValueError(
            "rotated_roi_align needs a fixed sampling_ratio > 0 under torch.compile/torch.export "
            "(the adaptive grid depends on the RoI sizes)"
        )
    # Adaptive grid: RoIs grouped by their (gh, gw), each group pooled at once.
    rw, rh = frame[2], frame[3]
    grid_h = torch.ceil(rh.detach() / out_size[0]).long().clamp(min=1)
    grid_w = torch.ceil(rw.detach() / out_size[1]).long().clamp(min=1)
    out = table.new_zeros((k, c, *out_size))
    for gh, gw in torch.unique(torch.stack([grid_h, grid_w], dim=1), dim=0).tolist():
        idx = ((grid_h == gh) & (grid_w == gw)).nonzero(as_tuple=True)[0]
        x, y = _sample_points(tuple(t[idx] for t in frame), out_size, (gh, gw))
        rows, weights = _bin_taps(x, y, first_row[idx], height, width, out_size, (gh, gw))
        out = out.index_put((idx,), _pool_table(table, rows, weights, idx.numel(), out_size))
    return out.to(input.dtype)


def multilevel_rotated_roi_align(
    maps: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor,
    output_size: int | tuple[int, int],
    spatial_scales: Sequence[float],
    sampling_ratio: int,
    aligned: bool = True,
) -> Tensor:
    """Rotated RoIAlign of each RoI on its own pyramid level, all levels in one pass.

    Equal to calling :func:`rotated_roi_align` on ``maps[levels[i]]`` for every RoI ``i``, but without
    splitting the RoIs by level (no data-dependent shapes, so it also traces for ``torch.export``).

    Args:
        maps: ``L`` feature maps ``(N, C, H_l, W_l)`` of one dtype.
        rois: ``(K, 6)`` ``(batch_index, cx, cy, w, h, angle)`` in input-image pixels.
        levels: ``(K,)`` integer level of each RoI, in ``[0, L)``.
        output_size: ``(out_h, out_w)`` or a single int.
        spatial_scales: factor from image pixels to each level's pixels.
        sampling_ratio: samples per bin along each axis (must be ``> 0``).
        aligned: as in :func:`rotated_roi_align`.

    Returns:
        ``(K, C, out_h, out_w)`` tensor of the maps' dtype.
    """
    if len(maps) != len(spatial_scales) or not maps:
        raise ValueError(f"need one spatial scale per map, got {len(maps)} maps and {len(spatial_scales)}")
    if sampling_ratio <= 0:
        raise ValueError("multilevel_rotated_roi_align needs a fixed sampling_ratio > 0")
    # Half-precision maps are pooled in float32, as in rotated_roi_align.
    dtype = torch.float32 if maps[0].dtype in (torch.float16, torch.bfloat16) else maps[0].dtype
    rois = rois.to(dtype=dtype, device=maps[0].device)
    out_size = _output_size(output_size)
    n, c = maps[0].shape[:2]
    k = rois.shape[0]
    if k == 0:
        return maps[0].new_zeros((0, c, *out_size))
    batch = rois[:, 0].long()
    _check_batch(batch, n)
    levels = levels.long()
    sizes = torch.tensor([list(m.shape[-2:]) for m in maps], device=rois.device)
    starts = torch.cumsum(sizes.prod(dim=1) * n, dim=0) - sizes.prod(dim=1) * n
    scale = torch.tensor(list(spatial_scales), dtype=dtype, device=rois.device)[levels]
    height, width = sizes[levels, 0], sizes[levels, 1]
    frame = _roi_frame(rois, scale, aligned)
    grid = (sampling_ratio, sampling_ratio)
    x, y = _sample_points(frame, out_size, grid)
    first_row = starts[levels] + batch * (height * width)
    rows, weights = _bin_taps(x, y, first_row, height, width, out_size, grid)
    return _pool_table(_feature_table(maps, dtype), rows, weights, k, out_size).to(maps[0].dtype)


class RotatedRoIAlign(torch.nn.Module):
    """Module form of :func:`rotated_roi_align`."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return rotated_roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
