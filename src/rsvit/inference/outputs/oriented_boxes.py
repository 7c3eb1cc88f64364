"""Oriented boxes of a detector (task ``detection``): GeoJSON polygons and DOTA label text.

Every window's detections (``boxes`` le90 ``(cx, cy, w, h, angle)`` in window pixels, ``scores``,
``labels``) are shifted to raster pixels and appended, one JSON line per window, to a partial file beside
the output; the lines of a strip are on disk before the strip is recorded as done, so ``resume`` drops the
lines of windows that will run again and continues. Nothing of the windows' images is kept: memory holds
the detections only. At the end the detections of all windows are merged with per-class rotated NMS
(IoU ``0.1`` by default, as the official DOTA merge of split images; ``extra["merge_iou"]`` in the model
file changes it), so an object seen by two overlapping windows is written once.

The format of each written file follows its suffix: ``.geojson`` / ``.json`` is a FeatureCollection of
polygons (EPSG:4326 by default, or the raster CRS, or pixel coordinates; properties ``class``,
``class_index``, ``score`` and the box in raster pixels ``cx, cy, w, h, angle``, angle in radians), ``.txt``
is a DOTA ``labelTxt`` file in raster pixels (one object per line ``x1 y1 ... y4 class score``, highest
score first), which :func:`rsvit.data.detection.labels.read_labels` reads back with the scores.
``output`` is the main file and ``vector`` an optional second one (e.g. ``boxes.txt`` and
``boxes.geojson``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rsvit.inference.outputs.base import ModelFacts, OutputRequest, Products, RasterOutput
from rsvit.inference.outputs.registry import register_output
from rsvit.inference.plan import WindowPlan
from rsvit.inference.writer import PartialFiles
from rsvit.utils.atomic import atomic_write_text

__all__ = ["DetectionMerge", "OrientedBoxOutput", "WindowBoxes", "box_format"]

#: decimals of longitude/latitude in EPSG:4326 output (1e-7 degree is about 1 cm), as for polygons
LONLAT_DECIMALS = 7
_GEOJSON_SUFFIXES = (".geojson", ".json")
_TEXT_SUFFIXES = (".txt",)
_PARTIAL_FORMAT = "rsvit-oriented-boxes-partial"


def box_format(path: Path) -> str:
    """``"geojson"`` or ``"dota"`` from the file's suffix; anything else is refused with the choices."""
    suffix = path.suffix.lower()
    if suffix in _GEOJSON_SUFFIXES:
        return "geojson"
    if suffix in _TEXT_SUFFIXES:
        return "dota"
    raise ValueError(
        f"{path}: detections are written as GeoJSON (.geojson, .json) or DOTA label text (.txt); "
        f"choose one of these suffixes, e.g. --output boxes.geojson"
    )


def partial_boxes_path(files: PartialFiles) -> Path:
    """The partial file of the detections (JSON lines), beside the output, cleaned with the others."""
    return files.objects


@dataclass(frozen=True)
class WindowBoxes:
    """The detections of one window, in window pixels (``boxes`` ``(K, 5)`` float64 le90)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class DetectionMerge:
    """Detections of all windows in raster pixels, merged with per-class rotated NMS."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def read(cls, path: Path) -> tuple[DetectionMerge, dict[str, Any]]:
        """All detections of a partial file and its header (grid and settings)."""
        boxes, scores, labels = [], [], []
        header: dict[str, Any] = {}
        with open(path, encoding="utf-8") as src:
            for line in src:
                record = json.loads(line)
                if "format" in record:
                    header = record
                    continue
                boxes.extend(record["boxes"])
                scores.extend(record["scores"])
                labels.extend(record["labels"])
        merged = cls(
            np.asarray(boxes, dtype=np.float64).reshape(-1, 5),
            np.asarray(scores, dtype=np.float64).reshape(-1),
            np.asarray(labels, dtype=np.int64).reshape(-1),
        )
        return merged, header

    def nms(self, iou: float) -> DetectionMerge:
        """The boxes kept by per-class rotated NMS, highest score first."""
        from rsvit.ops import batched_nms_rotated

        if len(self.scores) == 0:
            return self
        keep = batched_nms_rotated(
            torch.from_numpy(self.boxes), torch.from_numpy(self.scores), torch.from_numpy(self.labels), iou
        ).numpy()
        return DetectionMerge(self.boxes[keep], self.scores[keep], self.labels[keep])

    def polygons(self) -> np.ndarray:
        """``(K, 8)`` corners in raster pixels (column, row)."""
        from rsvit.structures.rotated_boxes import obb_to_poly

        return obb_to_poly(torch.from_numpy(self.boxes)).numpy().reshape(-1, 8)


class BoxSink:
    """Appends each window's detections (in raster pixels) to the partial file, strip by strip."""

    def __init__(
        self, path: Path, grid: dict[str, Any], plan: WindowPlan, strips: range, create: bool
    ) -> None:
        self.path = path
        self.plan = plan
        self.pending: list[str] = []
        if create:
            header = {"format": _PARTIAL_FORMAT, "crs": _crs_text(grid.get("crs")), "transform": _gdal(grid)}
            atomic_write_text(path, json.dumps(header) + "\n")
        else:
            self._drop_from(plan.windows_for_strips(strips).start)

    def _drop_from(self, first: int) -> None:
        """Forgets the windows from ``first`` on: they run again (a resumed run)."""
        kept = []
        with open(self.path, encoding="utf-8") as src:
            for line in src:
                record = json.loads(line)
                if record.get("window", -1) < first:
                    kept.append(line if line.endswith("\n") else line + "\n")
        atomic_write_text(self.path, "".join(kept))

    def add(self, index: int, result: WindowBoxes | None, valid: np.ndarray | None) -> None:
        if result is None or len(result.scores) == 0:
            return
        win = self.plan.window(index)
        boxes = result.boxes.copy()
        boxes[:, 0] += win.x0
        boxes[:, 1] += win.y0
        record = {
            "window": index,
            "y0": win.y0,
            "boxes": boxes.tolist(),
            "scores": result.scores.tolist(),
            "labels": result.labels.tolist(),
        }
        self.pending.append(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self.pending:
            with open(self.path, "a", encoding="utf-8") as dst:
                dst.writelines(self.pending)
                dst.flush()
                os.fsync(dst.fileno())
            self.pending = []

    def close(self) -> None:
        self.pending = []  # windows after the last finished strip run again on resume


def _crs_text(crs: Any) -> str | None:
    return None if crs is None else crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


def _gdal(grid: dict[str, Any]) -> list[float] | None:
    transform = grid.get("transform")
    return None if transform is None else list(transform)[:6]


def _class_names(facts: ModelFacts) -> tuple[str, ...]:
    classes = getattr(facts.meta, "classes", None)
    if facts.spec is not None:
        n = int(facts.spec.num_classes)
    elif isinstance(getattr(facts.model, "num_classes", None), int):
        n = int(facts.model.num_classes)
    elif classes:
        n = len(classes)
    else:
        raise ValueError(
            "the detector's classes are unknown: pass metadata with classes, or a model with num_classes"
        )
    if classes and len(classes) != n:
        raise ValueError(f"the metadata names {len(classes)} classes but the detector predicts {n}")
    return tuple(classes) if classes else tuple(f"class_{i}" for i in range(n))


@register_output
@dataclass(frozen=True)
class OrientedBoxOutput(RasterOutput):
    """Oriented boxes merged across windows, written as GeoJSON polygons and/or DOTA label text."""

    tasks: ClassVar[dict[str, int]] = {"detection": 1}
    default_window: ClassVar[int | None] = 1024  # DOTA's split size
    default_overlap: ClassVar[int | None] = 200

    classes: tuple[str, ...]
    merge_iou: float = 0.1
    #: whether a GeoJSON file in a geographic or projected CRS was asked for (needs a georeferenced raster)
    needs_crs: bool = False

    @classmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> OrientedBoxOutput:
        if request.probabilities is not None or request.probabilities_output is not None:
            raise ValueError("a detector has no per-pixel probabilities; drop --probabilities")
        box_format(request.output)
        if request.vector is not None:
            box_format(request.vector)
        extra = dict(getattr(facts.meta, "extra", None) or {})
        iou = float(extra.get("merge_iou", 0.1))
        if not 0.0 <= iou <= 1.0:
            raise ValueError(f"merge_iou must be in [0, 1], got {iou}")
        geojson = [
            p for p in (request.output, request.vector) if p is not None and box_format(p) == "geojson"
        ]
        needs_crs = bool(geojson) and request.vector_crs != "pixel"
        return cls(classes=_class_names(facts), merge_iou=iou, needs_crs=needs_crs)

    def fingerprint(self) -> dict[str, Any]:
        return {"channels": len(self.classes), "probabilities": None, "merge_iou": self.merge_iou}

    def split_batch(self, out: Any, inputs: tuple[int, ...]) -> Sequence[WindowBoxes]:
        if (
            not isinstance(out, list | tuple)
            or len(out) != inputs[0]
            or not all(isinstance(d, dict) for d in out)
        ):
            raise ValueError(
                f"a detection model must return one dict (boxes, scores, labels) per window; got "
                f"{type(out).__name__} for {inputs[0]} windows"
            )
        results = []
        for det in out:
            missing = {"boxes", "scores", "labels"} - set(det)
            if missing:
                raise ValueError(f"the detector's output lacks {', '.join(sorted(missing))}")
            boxes = det["boxes"].detach().float().cpu().double().numpy().reshape(-1, 5)
            scores = det["scores"].detach().float().cpu().double().numpy().reshape(-1)
            labels = det["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1)
            if not len(boxes) == len(scores) == len(labels):
                raise ValueError(
                    f"the detector returned {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
                raise ValueError(f"the detector returned labels outside [0, {len(self.classes)})")
            finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
            results.append(WindowBoxes(boxes[finite], scores[finite], labels[finite]))
        return results

    def open_share(
        self, files: PartialFiles, grid: dict[str, Any], plan: WindowPlan, strips: range, create: bool
    ) -> BoxSink:
        if self.needs_crs and (grid.get("crs") is None or grid.get("transform") is None):
            raise ValueError(
                "the raster has no CRS, so its boxes cannot be written in EPSG:4326 or a raster CRS: "
                "georeference it (e.g. gdal_edit.py -a_srs), or pass vector_crs='pixel' (--vector-crs pixel)"
            )
        return BoxSink(partial_boxes_path(files), grid, plan, strips, create)

    def partial_paths(self, files: PartialFiles, grid: dict[str, Any]) -> list[Path]:
        return [partial_boxes_path(files)]

    def merge_share(
        self, source: PartialFiles, target: PartialFiles, grid: dict[str, Any], rows: tuple[int, int]
    ) -> None:
        lines = []
        with open(partial_boxes_path(source), encoding="utf-8") as src:
            for line in src:
                record = json.loads(line)
                if "format" not in record and rows[0] <= record["y0"] < rows[1]:
                    lines.append(line if line.endswith("\n") else line + "\n")
        with open(partial_boxes_path(target), "a", encoding="utf-8") as dst:
            dst.writelines(lines)

    def finish(self, files: PartialFiles, request: OutputRequest) -> Products:
        detections, header = DetectionMerge.read(partial_boxes_path(files))
        kept = detections.nms(self.merge_iou)
        for path in [request.output] + ([request.vector] if request.vector is not None else []):
            if box_format(path) == "geojson":
                text = self.geojson(kept, header, request.vector_crs)
            else:
                text = self.dota_text(kept)
            atomic_write_text(path, text)
        return Products(vector=request.vector, features=len(kept.scores))

    def dota_text(self, kept: DetectionMerge) -> str:
        """``labelTxt`` lines ``x1 y1 ... y4 class score`` in raster pixels, highest score first."""
        from rsvit.data.detection.labels import DotaLabels, format_labels

        labels = DotaLabels(
            kept.polygons(),
            [self.classes[i] for i in kept.labels],
            np.zeros(len(kept.labels), dtype=np.int64),
            scores=kept.scores,
        )
        return format_labels(labels)

    def geojson(self, kept: DetectionMerge, header: dict[str, Any], vector_crs: str) -> str:
        """A FeatureCollection of the boxes' polygons in ``vector_crs``."""
        rings = kept.polygons().reshape(-1, 4, 2)
        collection: dict[str, Any] = {"type": "FeatureCollection"}
        decimals = None
        if vector_crs != "pixel" and len(rings):
            rings, decimals = _to_crs(rings, header, vector_crs)
        if vector_crs == "raster":
            from rasterio.crs import CRS

            crs = CRS.from_wkt(header["crs"])
            code = crs.to_epsg()
            name = f"urn:ogc:def:crs:EPSG::{code}" if code else crs.to_string()
            collection["crs"] = {"type": "name", "properties": {"name": name}}
        features = []
        for ring, box, score, label in zip(rings, kept.boxes, kept.scores, kept.labels, strict=True):
            coords = ring.tolist()
            if _signed_area(ring) < 0:
                coords = coords[::-1]  # exterior rings counter-clockwise (RFC 7946)
            coords.append(coords[0])
            if decimals is not None:
                coords = [[round(x, decimals), round(y, decimals)] for x, y in coords]
            cx, cy, w, h, angle = (float(v) for v in box)
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [coords]},
                    "properties": {
                        "class": self.classes[int(label)],
                        "class_index": int(label),
                        "score": float(score),
                        "cx": cx,
                        "cy": cy,
                        "w": w,
                        "h": h,
                        "angle": angle,
                    },
                }
            )
        collection["features"] = features
        return json.dumps(collection) + "\n"

    def final_paths(self, request: OutputRequest) -> list[Path]:
        return [request.output] + ([request.vector] if request.vector is not None else [])


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _to_crs(rings: np.ndarray, header: dict[str, Any], vector_crs: str) -> tuple[np.ndarray, int | None]:
    """Pixel corners (column, row) -> raster CRS through the transform, then EPSG:4326 if asked."""
    if header.get("crs") is None or header.get("transform") is None:
        raise ValueError(
            f"the raster has no CRS, so its boxes cannot be written in {vector_crs}; pass "
            "vector_crs='pixel' (--vector-crs pixel) for column/row coordinates"
        )
    from rasterio.transform import Affine

    a = Affine(*header["transform"])
    cols, rows = rings[..., 0].reshape(-1), rings[..., 1].reshape(-1)
    xs = a.a * cols + a.b * rows + a.c
    ys = a.d * cols + a.e * rows + a.f
    if vector_crs == "raster":
        return np.stack([xs, ys], axis=-1).reshape(rings.shape), None
    from rasterio.crs import CRS
    from rasterio.warp import transform

    lon, lat = transform(CRS.from_wkt(header["crs"]), CRS.from_epsg(4326), xs.tolist(), ys.tolist())
    return np.stack([np.asarray(lon), np.asarray(lat)], axis=-1).reshape(rings.shape), LONLAT_DECIMALS
