"""Rotated RoIAlign: average bilinear samples of a rotated grid laid over each region of interest.

Each RoI ``(cx, cy, w, h, angle)`` is cut into ``out_h x out_w`` bins along its own axes; each bin is
the mean of ``grid_h x grid_w`` bilinear samples at the centres of a regular sub-grid. Sample
positions are computed in the RoI frame and rotated into the feature map, then all samples of all
RoIs are gathered at once (chunked to bound memory). Gradients reach the features through the
gather and the RoI coordinates through the bilinear weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RotatedRoIAlign", "rotated_roi_align"]

# Upper bound on gathered feature values per chunk (samples x channels).
_CHUNK_ELEMENTS = 1 << 22


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


def _bilinear(flat: Tensor, batch: Tensor, y: Tensor, x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear samples ``(S, C)`` from ``flat`` ``(N*H*W, C)`` at points ``(S,)`` of images ``batch``."""
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y0 = torch.floor(y).long()
    x0 = torch.floor(x).long()
    y_edge = y0 >= height - 1
    x_edge = x0 >= width - 1
    y0 = torch.where(y_edge, height - 1, y0)
    x0 = torch.where(x_edge, width - 1, x0)
    y1 = torch.where(y_edge, y0, y0 + 1)
    x1 = torch.where(x_edge, x0, x0 + 1)
    y = torch.where(y_edge, y0.to(y.dtype), y)
    x = torch.where(x_edge, x0.to(x.dtype), x)
    ly, lx = y - y0.to(y.dtype), x - x0.to(x.dtype)
    hy, hx = 1 - ly, 1 - lx
    base = batch * (height * width)
    out = (
        flat[base + y0 * width + x0] * (hy * hx).unsqueeze(-1)
        + flat[base + y0 * width + x1] * (hy * lx).unsqueeze(-1)
        + flat[base + y1 * width + x0] * (ly * hx).unsqueeze(-1)
        + flat[base + y1 * width + x1] * (ly * lx).unsqueeze(-1)
    )
    return torch.where(outside.unsqueeze(-1), torch.zeros_like(out), out)


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
    if input.dtype in (torch.float16, torch.bfloat16):
        # Sample positions need more than 8-11 mantissa bits (a 256-px map): pool in float32.
        rois = _rois_to_tensor(rois).float()
        return rotated_roi_align(input.float(), rois, output_size, spatial_scale, sampling_ratio, aligned).to(
            input.dtype
        )
    rois = _rois_to_tensor(rois).to(dtype=input.dtype, device=input.device)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, height, width = input.shape
    k = rois.shape[0]
    out = input.new_zeros((k, c, out_h, out_w))
    if k == 0:
        return out
    batch = rois[:, 0].long()
    tracing = torch.compiler.is_compiling()
    if not tracing and bool(((batch < 0) | (batch >= n)).any()):
        raise ValueError(
            f"roi batch indices must be in [0, {n}), got range [{int(batch.min())}, {int(batch.max())}]"
        )
    offset = 0.5 if aligned else 0.0
    cx = rois[:, 1] * spatial_scale - offset
    cy = rois[:, 2] * spatial_scale - offset
    rw = rois[:, 3] * spatial_scale
    rh = rois[:, 4] * spatial_scale
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    geometry = (batch, cx, cy, rw, rh, rois[:, 5])
    if sampling_ratio > 0 and height > 1 and width > 1:
        if tracing:
            # torch.compile / torch.export: no data-dependent grouping; every image pools every RoI.
            for image in range(n):
                pooled = _grid_sample_bins(input[image : image + 1], geometry, (out_h, out_w), sampling_ratio)
                out = torch.where((batch == image).view(-1, 1, 1, 1), pooled, out)
            return out
        return _pool_grid_sample(input, geometry, (out_h, out_w), sampling_ratio)
    flat = input.permute(0, 2, 3, 1).reshape(n * height * width, c)
    if tracing:
        # torch.compile / torch.export: one fixed sampling grid for all RoIs, no data-dependent
        # grouping or chunking (same arithmetic per sample as the eager path).
        if sampling_ratio <= 0:
            raise ValueError(
                "rotated_roi_align needs a fixed sampling_ratio > 0 under torch.compile/torch.export "
                "(the adaptive grid depends on the RoI sizes)"
            )
        return _pool(flat, geometry, (height, width), (out_h, out_w), (sampling_ratio, sampling_ratio))
    if sampling_ratio > 0:
        grid_h = torch.full((k,), sampling_ratio, dtype=torch.long, device=input.device)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(rh.detach() / out_h).long().clamp(min=1)
        grid_w = torch.ceil(rw.detach() / out_w).long().clamp(min=1)

    pieces: list[tuple[Tensor, Tensor]] = []
    keys = torch.stack([grid_h, grid_w], dim=1)
    for gh, gw in torch.unique(keys, dim=0).tolist():
        members = ((grid_h == gh) & (grid_w == gw)).nonzero(as_tuple=True)[0]
        samples = out_h * gh * out_w * gw
        per_chunk = max(1, _CHUNK_ELEMENTS // max(1, samples * c))
        for start in range(0, members.numel(), per_chunk):
            idx = members[start : start + per_chunk]
            part = tuple(t[idx] for t in geometry)
            pieces.append((idx, _pool(flat, part, (height, width), (out_h, out_w), (gh, gw))))
    all_idx = torch.cat([p[0] for p in pieces])
    all_vals = torch.cat([p[1] for p in pieces])
    return out.index_put((all_idx,), all_vals)


def _sample_points(
    geometry: tuple[Tensor, ...], out_size: tuple[int, int], grid: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Sample positions ``x, y`` ``(R, out_h * gh, out_w * gw)`` in feature-map pixels, bin-major."""
    _, cx, cy, rw, rh, angle = geometry
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


def _pool_grid_sample(
    input: Tensor, geometry: tuple[Tensor, ...], out_size: tuple[int, int], ratio: int
) -> Tensor:
    """Eager pooling with ``grid_sample`` (one fused bilinear pass) instead of explicit gathers.

    Needs ``H, W >= 2`` (the normalised grid divides by ``H - 1``).
    """
    n, c = input.shape[:2]
    out_h, out_w = out_size
    batch = geometry[0]
    k = batch.shape[0]
    out = input.new_empty((k, c, out_h, out_w))
    per_chunk = max(1, (_CHUNK_ELEMENTS * 4) // (out_h * ratio * out_w * ratio * c))
    for image in range(n):
        members = (batch == image).nonzero(as_tuple=True)[0] if n > 1 else None
        count = k if members is None else members.numel()
        for start in range(0, count, per_chunk):
            stop = min(start + per_chunk, count)
            sel = slice(start, stop) if members is None else members[start:stop]
            part = tuple(t[sel] for t in geometry)
            out[sel] = _grid_sample_bins(input[image : image + 1], part, out_size, ratio)
    return out


def _grid_sample_bins(
    image: Tensor, geometry: tuple[Tensor, ...], out_size: tuple[int, int], ratio: int
) -> Tensor:
    """``(R, C, out_h, out_w)`` bin means of the RoIs ``geometry`` on one ``(1, C, H, W)`` map."""
    c, height, width = image.shape[1:]
    out_h, out_w = out_size
    x, y = _sample_points(geometry, out_size, (ratio, ratio))
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    # Samples up to one pixel outside take the edge value (clamped here, as the reference kernel
    # does); samples further out are sent far away, where zero padding makes them contribute 0.
    far = torch.full_like(x, -4.0)
    gx = torch.where(outside, far, x.clamp(0, width - 1) * (2.0 / (width - 1)) - 1.0)
    gy = torch.where(outside, far, y.clamp(0, height - 1) * (2.0 / (height - 1)) - 1.0)
    r, sh, sw = x.shape
    vals = torch.nn.functional.grid_sample(
        image,
        torch.stack([gx, gy], dim=-1).reshape(1, r * sh, sw, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (1, C, R * out_h * ratio, out_w * ratio): bins of one RoI are contiguous rows
    bins = torch.nn.functional.avg_pool2d(vals, (ratio, ratio))
    return bins.view(c, r, out_h, out_w).transpose(0, 1)


def _pool(
    flat: Tensor,
    geometry: tuple[Tensor, ...],
    size: tuple[int, int],
    out_size: tuple[int, int],
    grid: tuple[int, int],
) -> Tensor:
    """``(R, C, out_h, out_w)`` bin means for RoIs ``geometry = (batch, cx, cy, w, h, angle)``.

    ``cx, cy, w, h`` are in feature-map pixels (already scaled and shifted); ``grid`` samples per bin.
    """
    batch = geometry[0]
    height, width = size
    out_h, out_w = out_size
    gh, gw = grid
    c = flat.shape[1]
    x, y = _sample_points(geometry, out_size, grid)
    b = batch.view(-1, 1, 1).expand_as(x)
    vals = _bilinear(flat, b.reshape(-1), y.reshape(-1), x.reshape(-1), height, width)
    vals = vals.view(-1, out_h, gh, out_w, gw, c).mean(dim=(2, 4))  # (R, out_h, out_w, C)
    return vals.permute(0, 3, 1, 2)


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
