"""Prompts for promptable segmentation: points, boxes, mask prompts and scribbles, in pixels or on a map.

**Pixel convention.** ``x`` is the column and ``y`` the row, with pixel *centres* at integers: the point
(3, 5) is the centre of the pixel in column 3, row 5, and a box ``(x0, y0, x1, y1)`` spans the pixels
whose centres it covers. This is the convention of Segment Anything's prompts (its prompt encoder adds the
half pixel). A map coordinate is mapped through the raster's inverse affine transform (which puts pixel
edges at integers) and shifted by -0.5.

**Vector files.** :func:`read_prompts` accepts GeoJSON (a ``FeatureCollection``, one ``Feature`` or a bare
geometry; a file ``.geojson``/``.json``, a JSON string or the parsed dict). Coordinates are in EPSG:4326
(RFC 7946) unless the file carries a legacy ``crs`` member or ``crs=`` is given; they are reprojected to
the raster's CRS with ``rasterio.warp.transform_geom``. Other formats (Shapefile, GeoPackage) need an OGR
reader that rsvit does not depend on: convert them to GeoJSON first
(``ogr2ogr -f GeoJSON out.geojson in.shp``).

Geometry types: ``Point``/``MultiPoint`` -> point prompt; ``Polygon``/``MultiPolygon`` -> box prompt
(the bounds) or, with ``polygon_as="mask"``, a mask prompt (the rasterised polygon, plus its box);
``LineString``/``MultiLineString`` -> scribble. Feature properties: ``label`` (1/0, ``"fg"``/``"bg"``,
``"foreground"``/``"background"``, ``true``/``false``; default foreground) and ``prompt_id``: features
sharing a ``prompt_id`` form ONE prompt (e.g. a box with a background point); without one every feature is
its own prompt. The property names are arguments.

**Scribble rule** (:func:`scribble_points`). A scribble is turned into point prompts, all with the
scribble's label: points are placed along the polyline at equal arc-length steps from its first to its last
vertex, both ends included, with ``n = min(max_points, floor(length / spacing) + 1)`` points (so the step is
at least ``spacing`` pixels, and a scribble shorter than ``spacing`` gives one point, at its middle).
Points therefore always lie on the line. A foreground scribble may also contribute its bounding box grown by
``box_margin`` pixels (``scribble_box=True``), which tells SAM the extent of the object it was drawn along.
A scribble *mask* (:func:`scribble_mask_points`) is cut into ``spacing``-sized cells; each cell holding
scribble pixels contributes the scribble pixel nearest to the mean of those pixels (so on the scribble),
cells taken row by row and thinned evenly to ``max_points``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Prompt",
    "check_boxes",
    "load_geojson_features",
    "map_to_pixel",
    "pixel_to_map",
    "read_prompts",
    "scribble_mask_points",
    "scribble_points",
]

GEOMETRY_KINDS = {
    "Point": "points",
    "MultiPoint": "points",
    "Polygon": "polygon",
    "MultiPolygon": "polygon",
    "LineString": "scribble",
    "MultiLineString": "scribble",
}
MIN_BOX_SIZE = 0.01  # pixels; thinner boxes from vector features count as zero-area (reprojection noise)
LABEL_WORDS = {
    "fg": 1,
    "foreground": 1,
    "pos": 1,
    "positive": 1,
    "bg": 0,
    "background": 0,
    "neg": 0,
    "negative": 0,
}


@dataclass
class Prompt:
    """One prompt in pixel coordinates (centres at integers, see the module docstring).

    Attributes:
        points: ``(N, 2)`` float64 (x, y), or None.
        labels: ``(N,)`` int64, 1 foreground / 0 background, or None.
        box: ``(4,)`` float64 x0, y0, x1, y1, or None.
        mask: ``(H, W)`` bool mask prompt at the raster's resolution, or None.
        prompt_id: the feature's ``prompt_id`` (or its index when it has none).
        sources: geometry types it was made from, for messages.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    prompt_id: Any = None
    sources: list[str] = field(default_factory=list)

    def add_points(self, points: np.ndarray, label: int) -> None:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = np.full(len(points), int(label), dtype=np.int64)
        self.points = points if self.points is None else np.concatenate([self.points, points])
        self.labels = labels if self.labels is None else np.concatenate([self.labels, labels])

    def set_box(self, box: Sequence[float]) -> None:
        if self.box is not None:
            raise ValueError(f"prompt {self.prompt_id!r} has more than one box; SAM takes one box per prompt")
        box = np.asarray(box, dtype=np.float64).reshape(4)
        check_boxes(box[None], what=f"prompt {self.prompt_id!r}", min_size=MIN_BOX_SIZE)
        self.box = box


def check_boxes(boxes: np.ndarray, what: str = "box", min_size: float = 0.0) -> None:
    """Raise if a box (x0, y0, x1, y1) has its corners swapped or encloses no area.

    ``min_size`` (pixels) treats thinner boxes as zero-area too, e.g. reprojection noise around a line.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bad = (boxes[:, 2] - boxes[:, 0] <= min_size) | (boxes[:, 3] - boxes[:, 1] <= min_size)
    if bad.any():
        raise ValueError(
            f"{what}: box {boxes[np.argmax(bad)].tolist()} has zero area or swapped corners; boxes are "
            "x0, y0, x1, y1 with x1 > x0 and y1 > y0 (a polygon with no area, e.g. a line, gives such a box)"
        )


def map_to_pixel(xy: np.ndarray, transform: Any) -> np.ndarray:
    """``(..., 2)`` map coordinates -> pixel coordinates (x, y), centres at integers."""
    xy = np.asarray(xy, dtype=np.float64)
    inv = ~transform
    x, y = xy[..., 0], xy[..., 1]
    col = inv.a * x + inv.b * y + inv.c
    row = inv.d * x + inv.e * y + inv.f
    return np.stack([col - 0.5, row - 0.5], axis=-1)


def pixel_to_map(xy: np.ndarray, transform: Any) -> np.ndarray:
    """Inverse of :func:`map_to_pixel`."""
    xy = np.asarray(xy, dtype=np.float64) + 0.5
    t = transform
    x = t.a * xy[..., 0] + t.b * xy[..., 1] + t.c
    y = t.d * xy[..., 0] + t.e * xy[..., 1] + t.f
    return np.stack([x, y], axis=-1)


def scribble_points(line: np.ndarray, spacing: float = 16.0, max_points: int = 16) -> np.ndarray:
    """Points along a polyline ``(M, 2)`` at equal arc-length steps (the module's scribble rule)."""
    line = np.asarray(line, dtype=np.float64).reshape(-1, 2)
    if len(line) == 0:
        raise ValueError("a scribble needs at least one vertex")
    if spacing <= 0 or max_points < 1:
        raise ValueError(f"spacing must be > 0 and max_points >= 1, got {spacing} and {max_points}")
    steps = np.linalg.norm(np.diff(line, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    length = float(arc[-1])
    if length == 0:
        return line[:1].copy()
    n = min(max_points, math.floor(length / spacing) + 1)
    at = np.array([length / 2]) if n == 1 else np.linspace(0.0, length, n)
    return np.stack([np.interp(at, arc, line[:, 0]), np.interp(at, arc, line[:, 1])], axis=-1)


def scribble_mask_points(mask: np.ndarray, spacing: int = 16, max_points: int = 16) -> np.ndarray:
    """Points on a scribble drawn as a boolean ``(H, W)`` mask (the module's scribble-mask rule)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a scribble mask is (H, W), got shape {mask.shape}")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the scribble mask is empty")
    spacing = int(spacing)
    cell = (rows // spacing) * (mask.shape[1] // spacing + 1) + cols // spacing
    order = np.argsort(cell, kind="stable")
    _, starts = np.unique(cell[order], return_index=True)
    points = []
    for group in np.split(order, starts[1:]):
        ys, xs = rows[group].astype(np.float64), cols[group].astype(np.float64)
        nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
        points.append((xs[nearest], ys[nearest]))
    points = np.asarray(points, dtype=np.float64)
    if len(points) > max_points:
        points = points[np.linspace(0, len(points) - 1, max_points).round().astype(int)]
    return points


def _label(value: Any, where: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    raise ValueError(
        f"{where}: label {value!r} is not a prompt label; use 1/0, 'fg'/'bg', 'foreground'/'background'"
    )


def load_geojson_features(source: str | Path | Mapping) -> tuple[list[dict], str | None, str]:
    """(features, crs named in the file or None, a name for messages); prompts and boxes share it."""
    if isinstance(source, Mapping):
        data, name = dict(source), "the GeoJSON object"
    else:
        text = str(source)
        if isinstance(source, str) and (not text.strip() or text.lstrip().startswith("{")):
            name = "the GeoJSON text"
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"prompt file {path} does not exist")
            if path.suffix.lower() not in (".geojson", ".json"):
                raise ValueError(
                    f"{path}: only GeoJSON prompt files (.geojson, .json) are read; convert other vector "
                    "formats first, e.g. ogr2ogr -f GeoJSON prompts.geojson prompts.shp"
                )
            text, name = path.read_text(), str(path)
        if not text.strip():
            raise ValueError(f"{name} is empty: it holds no prompts")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} is not valid GeoJSON: {err}") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        features = list(data.get("features") or [])
    elif kind == "Feature":
        features = [data]
    elif kind in GEOMETRY_KINDS or kind == "GeometryCollection":
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise ValueError(
            f"{name}: expected a GeoJSON FeatureCollection, Feature or geometry, got type {kind!r}"
        )
    if not features:
        raise ValueError(f"{name} has no features: it holds no prompts")
    crs = (data.get("crs") or {}).get("properties", {}).get("name") if isinstance(data, dict) else None
    return features, crs, name


def read_prompts(
    source: str | Path | Mapping,
    transform: Any,
    raster_crs: Any,
    shape: tuple[int, int],
    crs: Any = None,
    polygon_as: str = "box",
    label_property: str = "label",
    id_property: str = "prompt_id",
    spacing: float = 16.0,
    max_points: int = 16,
    scribble_box: bool = False,
    box_margin: float = 8.0,
) -> list[Prompt]:
    """Prompts in the raster's pixel frame from a GeoJSON source (see the module docstring).

    Args:
        source: a ``.geojson``/``.json`` path, a GeoJSON string or a parsed GeoJSON dict.
        transform: the raster's affine transform (``rasterio`` ``Affine``).
        raster_crs: the raster's CRS (anything ``rasterio.crs.CRS.from_user_input`` reads).
        shape: raster ``(height, width)``; every prompt must lie inside it.
        crs: CRS of the coordinates; default the file's legacy ``crs`` member, else EPSG:4326.
        polygon_as: ``"box"`` (the polygon's bounds) or ``"mask"`` (rasterised polygon plus its box).
        label_property: property holding the label (default foreground when absent).
        id_property: property grouping features into one prompt.
        spacing: distance in pixels between sampled scribble points (:func:`scribble_points`).
        max_points: most points sampled from one scribble (:func:`scribble_points`).
        scribble_box: also give foreground scribbles their bounding box grown by ``box_margin`` pixels.
        box_margin: pixels the bounding box of a scribble grows by on each side when ``scribble_box``.

    Returns:
        Prompts in the order their ids first appear.

    Raises:
        ValueError: empty sources, unknown geometry types, unreadable labels, zero-area boxes, prompts
            outside the raster, or several boxes in one prompt.
    """
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    if polygon_as not in ("box", "mask"):
        raise ValueError(f"polygon_as must be 'box' or 'mask', got {polygon_as!r}")
    features, file_crs, name = load_geojson_features(source)
    src_crs = CRS.from_user_input(crs if crs is not None else (file_crs or "EPSG:4326"))
    dst_crs = CRS.from_user_input(raster_crs)
    height, width = int(shape[0]), int(shape[1])
    prompts: dict[Any, Prompt] = {}
    for index, feature in enumerate(features):
        geometry = (feature or {}).get("geometry")
        props = (feature or {}).get("properties") or {}
        pid = props.get(id_property, feature.get("id", index))
        where = f"{name}, feature {index} (prompt {pid!r})"
        if not geometry:
            raise ValueError(f"{where} has no geometry")
        kind = GEOMETRY_KINDS.get(geometry.get("type"))
        if kind is None:
            raise ValueError(
                f"{where}: geometry type {geometry.get('type')!r} is not a prompt; use Point/MultiPoint "
                "(points), Polygon/MultiPolygon (box or mask) or LineString/MultiLineString (scribble)"
            )
        label = _label(props.get(label_property), where)
        if src_crs != dst_crs:
            try:
                geometry = transform_geom(src_crs, dst_crs, geometry)
            except Exception as err:  # PROJ errors for coordinates outside the CRS's area
                raise ValueError(
                    f"{where} cannot be reprojected from {src_crs} to the raster's {dst_crs} ({err}); are "
                    "the coordinates really in that CRS? GeoJSON without a crs member is read as EPSG:4326"
                ) from None
        parts = _coordinate_parts(geometry)
        pixel_parts = [map_to_pixel(p, transform) for p in parts]
        _check_inside(np.concatenate(pixel_parts), width, height, where)
        prompt = prompts.setdefault(pid, Prompt(prompt_id=pid))
        prompt.sources.append(geometry["type"])
        if kind == "points":
            prompt.add_points(np.concatenate(pixel_parts), label)
        elif kind == "scribble":
            line_points = np.concatenate([scribble_points(p, spacing, max_points) for p in pixel_parts])
            if len(line_points) > max_points:  # several lines: thin evenly over all of them
                line_points = line_points[
                    np.linspace(0, len(line_points) - 1, max_points).round().astype(int)
                ]
            prompt.add_points(line_points, label)
            if scribble_box and label == 1:
                allp = np.concatenate(pixel_parts)
                lo = np.maximum(allp.min(0) - box_margin, 0)
                hi = np.minimum(allp.max(0) + box_margin, [width - 1, height - 1])
                prompt.set_box([lo[0], lo[1], hi[0], hi[1]])
        else:
            if label != 1:
                raise ValueError(f"{where}: a polygon prompt must be foreground (label 1), got {label}")
            allp = np.concatenate(pixel_parts)
            prompt.set_box([*allp.min(0), *allp.max(0)])
            if polygon_as == "mask":
                mask = rasterize(
                    [(geometry, 1)], out_shape=(height, width), transform=transform, dtype="uint8"
                )
                if not mask.any():
                    raise ValueError(f"{where}: the polygon covers no pixel centre; use polygon_as='box'")
                prompt.mask = mask.astype(bool) if prompt.mask is None else prompt.mask | mask.astype(bool)
    return list(prompts.values())


def _coordinate_parts(geometry: Mapping) -> list[np.ndarray]:
    """Vertex arrays ``(M, 2)`` of a GeoJSON geometry: one per point set, line or polygon ring."""
    kind, coords = geometry["type"], geometry["coordinates"]
    if kind == "Point":
        return [np.asarray([coords[:2]], dtype=np.float64)]
    if kind in ("MultiPoint", "LineString"):
        return [np.asarray([c[:2] for c in coords], dtype=np.float64)]
    if kind in ("MultiLineString", "Polygon"):
        return [np.asarray([c[:2] for c in part], dtype=np.float64) for part in coords]
    return [np.asarray([c[:2] for c in ring], dtype=np.float64) for poly in coords for ring in poly]


def _check_inside(points: np.ndarray, width: int, height: int, where: str) -> None:
    if points.size == 0:
        raise ValueError(f"{where} has no coordinates")
    outside = (points[:, 0] < -0.5) | (points[:, 0] > width - 0.5) | (points[:, 1] < -0.5)
    outside |= points[:, 1] > height - 0.5
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise ValueError(
            f"{where} lies outside the raster: pixel ({x:.1f}, {y:.1f}) is not inside its {width} x {height} "
            "pixels; check the prompts' CRS (GeoJSON without a crs member is read as EPSG:4326)"
        )
