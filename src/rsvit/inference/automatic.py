"""Automatic masks over a whole raster: SAM's automatic generator per window, de-duplicated across windows.

Windows tile the raster with ``overlap`` pixels shared by neighbours (default a quarter window). Each
window runs :class:`SamAutomaticMaskGenerator` (point grid per window and crop layer, quality and stability
filters, NMS inside the window). Across windows two rules remove the copies an overlap produces:

1. a mask touching an *inner* edge of its window (an edge that is not the raster's border) is cut there,
   and is dropped when another window contains its box away from that window's own inner edges (that
   window sees the object whole);
2. the survivors go through box NMS in raster pixels (predicted IoU as the score).

Instances are numbered 1.. by decreasing score; the instance raster (uint32, 0 = none, nodata the dtype's
maximum where the input is invalid) paints large masks first so small ones stay visible on top. Polygons
carry ``instance`` (the raster value), ``score``, ``stability``, ``area_px`` and ``area`` (map units, e.g.
square metres for a projected CRS).
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from rsvit.inference.promptable import (
    MaskCanvas,
    PolygonCollector,
    check_outputs,
    commit_outputs,
    open_promptable_model,
    progress_bar,
    to_uint8,
)
from rsvit.inference.reader import SceneReader
from rsvit.models.promptable.automatic import SamAutomaticMaskGenerator
from rsvit.models.promptable.sam import Sam
from rsvit.ops.windows import stride_starts

__all__ = ["RasterInstance", "masks_raster", "raster_instances", "window_grid"]

Window = tuple[int, int, int, int]


def window_grid(width: int, height: int, size: int, overlap: int) -> list[Window]:
    """Windows ``(x0, y0, w, h)`` covering the raster, neighbours sharing ``overlap`` pixels."""
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for a window of {size}")
    step = size - overlap
    w, h = min(size, width), min(size, height)
    return [(x, y, w, h) for y in stride_starts(height, size, step) for x in stride_starts(width, size, step)]


def inner_edges(window: Window, width: int, height: int) -> tuple[bool, bool, bool, bool]:
    """Which edges (left, top, right, bottom) of a window lie inside the raster."""
    x0, y0, w, h = window
    return x0 > 0, y0 > 0, x0 + w < width, y0 + h < height


def touches_inner_edge(box: Sequence[int], window: Window, width: int, height: int) -> bool:
    """Whether a box (raster pixels, inclusive maxima) reaches an inner edge of ``window``."""
    x0, y0, w, h = window
    left, top, right, bottom = inner_edges(window, width, height)
    return (
        (left and box[0] <= x0)
        or (top and box[1] <= y0)
        or (right and box[2] >= x0 + w - 1)
        or (bottom and box[3] >= y0 + h - 1)
    )


def seen_whole_elsewhere(
    box: Sequence[int], own: Window, windows: Sequence[Window], width: int, height: int
) -> bool:
    """Whether another window holds the box without it touching that window's inner edges."""
    for other in windows:
        if other == own:
            continue
        x0, y0, w, h = other
        inside = box[0] >= x0 and box[1] >= y0 and box[2] <= x0 + w - 1 and box[3] <= y0 + h - 1
        if inside and not touches_inner_edge(box, other, width, height):
            return True
    return False


class WindowIndex:
    """The windows of a grid that can contain a box, found by bisection of the grid's starts."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = {(w[0], w[1]): w for w in windows}
        self.xs = sorted({w[0] for w in windows})
        self.ys = sorted({w[1] for w in windows})
        self.size = (windows[0][2], windows[0][3])

    def containing(self, box: Sequence[int]) -> list[Window]:
        w, h = self.size
        xs = self.xs[bisect_left(self.xs, box[2] - w + 1) : bisect_right(self.xs, box[0])]
        ys = self.ys[bisect_left(self.ys, box[3] - h + 1) : bisect_right(self.ys, box[1])]
        return [self.windows[(x, y)] for y in ys for x in xs if (x, y) in self.windows]


@dataclass
class RasterInstance:
    """One mask in raster pixels: ``mask`` covers the box ``(x0, y0, x1, y1)`` (inclusive maxima)."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float
    stability: float
    window: Window


def masks_raster(
    model: str | os.PathLike[str] | Sam,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    vector: str | os.PathLike[str] | None = None,
    bands: Sequence[int] | None = None,
    window: int | None = None,
    overlap: int | None = None,
    scale: float | None = None,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    crop_n_layers: int = 0,
    min_mask_region_area: int = 0,
    encoder_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    runtime: str | None = None,
    vector_crs: str = "EPSG:4326",
    simplify: float = 1.0,
    overwrite: bool = False,
    progress: bool = True,
    generator_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes an instance-id COG (uint32) of every mask SAM finds on the raster, and optionally polygons.

    Args:
        model: a :class:`Sam`, an rsvit model file or an official SAM checkpoint.
        input: the raster (anything GDAL opens).
        output: the instance-id GeoTIFF (COG).
        vector: optional GeoJSON of the instances' polygons.
        bands: 1-based bands to feed (as many as the model takes).
        window: window side in pixels (default the model input size: native resolution).
        overlap: pixels shared by neighbouring windows (default a quarter window).
        scale: divisor to 0-1 (default the dtype's maximum).
        points_per_side: side of the point grid prompted in each window; this and the settings down to
            ``min_mask_region_area`` go to the per-window :class:`SamAutomaticMaskGenerator`.
        points_per_batch: points decoded together (memory vs. speed).
        pred_iou_thresh: keep masks whose predicted IoU is strictly above (0 disables).
        stability_score_thresh: keep masks whose stability is at least this (0 disables).
        box_nms_thresh: box IoU threshold of the NMS inside each window, and of the one across windows.
        crop_n_layers: layers of overlapping crops beyond the whole window.
        min_mask_region_area: fill holes and drop islands smaller than this many pixels (0 disables).
        encoder_dtype: autocast dtype of the image encoder (see :class:`SamPredictor`).
        device: where the model runs (default: where it was loaded).
        runtime: ``"torch"`` or ``"onnxruntime"``, as in :func:`~rsvit.inference.promptable.segment_raster`.
        vector_crs: coordinates of the polygons, as in :func:`~rsvit.inference.promptable.segment_raster`.
        simplify: polygon tolerance in pixels, as in :func:`~rsvit.inference.promptable.segment_raster`.
        overwrite: replace existing outputs.
        progress: show a progress bar over the windows.
        generator_kwargs: any other :class:`SamAutomaticMaskGenerator` argument.

    Returns:
        A summary: windows, candidate masks, instances kept, output paths.
    """
    input_path, output = Path(input), Path(output)
    vector_path = None if vector is None else Path(vector)
    check_outputs([output, vector_path], input_path, overwrite)
    sam = open_promptable_model(model, runtime, encoder_dtype, device)
    reader = SceneReader(input_path, bands=bands, expected_bands=int(sam.pixel_mean.shape[0]), scale=scale)
    size = int(window or sam.img_size)
    overlap = size // 4 if overlap is None else int(overlap)
    windows = window_grid(reader.width, reader.height, size, overlap)
    generator = SamAutomaticMaskGenerator(
        sam,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        box_nms_thresh=box_nms_thresh,
        crop_n_layers=crop_n_layers,
        min_mask_region_area=min_mask_region_area,
        encoder_dtype=encoder_dtype,
        **(generator_kwargs or {}),
    )
    try:
        kept, candidates = raster_instances(generator, reader, windows, box_nms_thresh, progress)
        summary = _write(kept, reader, output, vector_path, vector_crs, simplify)
    finally:
        reader.close()
    return {"windows": len(windows), "candidates": candidates, **summary}


def raster_instances(
    generator: SamAutomaticMaskGenerator,
    reader: SceneReader,
    windows: Sequence[Window],
    box_nms_thresh: float,
    progress: bool = True,
) -> tuple[list[RasterInstance], int]:
    """Every window's automatic masks, de-duplicated across window overlaps (the module's two rules).

    Returns the surviving instances by decreasing predicted IoU and the number of candidate masks the
    windows produced before de-duplication.
    """
    index = WindowIndex(windows)
    found: list[RasterInstance] = []
    candidates = 0
    with progress_bar(len(windows), "windows", progress) as bar:
        for win in windows:
            x0, y0, w, h = win
            image, valid = reader.read(y0, x0, h, w)
            for record in generator.generate(to_uint8(image)):
                candidates += 1
                mask = record["segmentation"]
                if valid is not None:
                    mask = mask & valid
                rows, cols = np.nonzero(mask)
                if len(rows) == 0:
                    continue
                box = (
                    int(cols.min()) + x0,
                    int(rows.min()) + y0,
                    int(cols.max()) + x0,
                    int(rows.max()) + y0,
                )
                if touches_inner_edge(box, win, reader.width, reader.height) and seen_whole_elsewhere(
                    box, win, index.containing(box), reader.width, reader.height
                ):
                    continue
                crop = mask[box[1] - y0 : box[3] - y0 + 1, box[0] - x0 : box[2] - x0 + 1]
                found.append(
                    RasterInstance(
                        box, crop, float(record["predicted_iou"]), float(record["stability_score"]), win
                    )
                )
            bar.update(1)
    return _deduplicate(found, box_nms_thresh), candidates


def _deduplicate(found: list[RasterInstance], threshold: float) -> list[RasterInstance]:
    """Box NMS in raster pixels; the survivors by decreasing score."""
    if not found:
        return []
    boxes = torch.tensor([f.box for f in found], dtype=torch.float32)
    scores = torch.tensor([f.score for f in found], dtype=torch.float32)
    keep = batched_nms(boxes, scores, torch.zeros(len(found), dtype=torch.int64), threshold)
    return [found[i] for i in keep.tolist()]  # batched_nms returns indices by decreasing score


def _write(
    kept: list[RasterInstance],
    reader: SceneReader,
    output: Path,
    vector: Path | None,
    vector_crs: str,
    simplify: float,
) -> dict[str, Any]:
    polygons = PolygonCollector(reader, vector_crs, simplify) if vector is not None else None
    canvas = MaskCanvas(reader, output, "uint32")
    pixel_area = abs(reader.transform.a * reader.transform.e - reader.transform.b * reader.transform.d)
    try:
        paint = sorted(range(len(kept)), key=lambda i: -int(kept[i].mask.sum()))
        for i in paint:
            inst = kept[i]
            win = (inst.box[0], inst.box[1], inst.mask.shape[1], inst.mask.shape[0])
            block = canvas.read(win)
            block[inst.mask & (block != canvas.nodata)] = i + 1
            canvas.write(block, win)
        instances = 0
        for i, inst in enumerate(kept):
            win = (inst.box[0], inst.box[1], inst.mask.shape[1], inst.mask.shape[0])
            own = canvas.read(win) == i + 1
            n = int(own.sum())
            if n == 0:
                continue  # wholly covered by smaller masks painted over it
            instances += 1
            if polygons is not None:
                props = {
                    "instance": i + 1,
                    "score": round(inst.score, 4),
                    "stability": round(inst.stability, 4),
                    "area_px": n,
                    "area": n * pixel_area,
                }
                polygons.add(own, win, props)
        commit_outputs(canvas, None, polygons, vector)
    except BaseException:
        canvas.discard()
        raise
    return {
        "instances": len(kept),
        "visible_instances": instances,
        "output": str(output),
        "vector": None if vector is None else str(vector),
        "features": None if polygons is None else len(polygons.features),
    }
