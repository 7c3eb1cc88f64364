"""DOTA-style detection evaluation on polygons, and the test-server submission format.

The matching follows the DOTA benchmark's rules (the PASCAL VOC procedure on polygons): per class,
detections are visited by decreasing score; each is matched to the ground-truth object of its image
with the highest polygon IoU. If that IoU is strictly above the threshold, the detection is a true
positive unless the object was already matched (then a false positive) or is difficult (then it is
ignored: neither true nor false positive). Otherwise it is a false positive. Recall divides by the
number of non-difficult objects. AP is either the VOC 2007 11-point interpolation (the DOTA default)
or the area under the precision envelope.

Ties in score are visited in input order (stable sort).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from rsvit.utils.atomic import atomic_write_text

if TYPE_CHECKING:
    from rsvit.data.detection.labels import DotaLabels

__all__ = [
    "ClassAP",
    "Detection",
    "DotaEvalResult",
    "evaluate_dota",
    "gather_evaluation",
    "merge_process_results",
    "polygon_iou",
    "read_task1_submission",
    "voc_ap",
    "write_task1_submission",
]

Detection = tuple[str, float, Sequence[float]]
"""``(image_id, score, polygon)`` with the polygon as 8 numbers ``(x1, y1, ..., x4, y4)``."""


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision from a recall/precision curve (arrays ordered by decreasing score).

    ``use_07_metric``: mean over the 11 recall levels ``0, 0.1, ..., 1`` of the best precision at
    recall >= that level (0 when never reached). Otherwise: area under the curve after making
    precision non-increasing from the right, summed where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for level in np.linspace(0.0, 1.0, 11):
            reached = recall >= level
            total += float(precision[reached].max()) if reached.any() else 0.0
        return total / 11.0
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _shapes(polys: np.ndarray) -> np.ndarray:
    geoms = shapely.polygons(np.asarray(polys, dtype=np.float64).reshape(-1, 4, 2))
    valid = shapely.is_valid(geoms)
    if not valid.all():
        geoms = np.where(valid, geoms, shapely.make_valid(geoms))
    return geoms


def polygon_iou(polys1: np.ndarray, polys2: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of quadrilaterals ``(N, 8)`` and ``(M, 8)`` (self-intersecting ones repaired first)."""
    a, b = _shapes(polys1), _shapes(polys2)
    out = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return out
    # Only pairs that touch can overlap; a spatial index finds them without trying all N * M.
    ib, ia = shapely.STRtree(a).query(b, predicate="intersects")
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    union = shapely.area(a[ia]) + shapely.area(b[ib]) - inter
    out[ia, ib] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


@dataclass
class ClassAP:
    """Result for one class: AP, counts and the curve (ordered by decreasing score)."""

    name: str
    ap: float
    num_gt: int
    num_difficult: int
    num_detections: int
    recall: np.ndarray
    precision: np.ndarray


@dataclass
class DotaEvalResult:
    """Per-class results and their mean over classes that have ground truth."""

    per_class: dict[str, ClassAP]
    map: float
    iou_threshold: float
    use_07_metric: bool

    def table(self, digits: int = 4) -> str:
        """A plain-text table of AP per class and the mean."""
        width = max([len("class"), *(len(n) for n in self.per_class)])
        lines = [f"{'class':<{width}}  {'AP':>8}  {'gt':>6}  {'dets':>7}"]
        for c in self.per_class.values():
            ap = "n/a" if math.isnan(c.ap) else f"{c.ap:.{digits}f}"
            lines.append(f"{c.name:<{width}}  {ap:>8}  {c.num_gt:>6}  {c.num_detections:>7}")
        metric = "VOC07 11-point" if self.use_07_metric else "area"
        lines.append(f"{'mAP':<{width}}  {self.map:>8.{digits}f}  ({metric}, IoU > {self.iou_threshold:g})")
        return "\n".join(lines)


def _evaluate_class(
    name: str,
    dets: Sequence[Detection],
    gts: Mapping[str, tuple[np.ndarray, np.ndarray]],
    iou_threshold: float,
    use_07_metric: bool,
) -> ClassAP:
    num_gt = sum(int((~diff).sum()) for _, diff in gts.values())
    num_difficult = sum(int(diff.sum()) for _, diff in gts.values())
    if not dets:
        ap = float("nan") if num_gt == 0 else 0.0
        return ClassAP(name, ap, num_gt, num_difficult, 0, np.zeros(0), np.zeros(0))
    images = [d[0] for d in dets]
    scores = np.array([d[1] for d in dets], dtype=np.float64)
    polys = np.array([np.asarray(d[2], dtype=np.float64).reshape(8) for d in dets])
    order = np.argsort(-scores, kind="stable")
    # Best-matching object (and its IoU) for every detection, computed per image in one shot.
    best_iou = np.full(len(dets), -np.inf)
    best_gt = np.full(len(dets), -1, dtype=np.int64)
    by_image: dict[str, list[int]] = {}
    for i, img in enumerate(images):
        by_image.setdefault(img, []).append(i)
    for img, idx in by_image.items():
        if img not in gts or len(gts[img][0]) == 0:
            continue
        iou = polygon_iou(polys[idx], gts[img][0])
        best_gt[idx] = iou.argmax(axis=1)
        best_iou[idx] = iou.max(axis=1)
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    taken = {img: np.zeros(len(g[0]), dtype=bool) for img, g in gts.items()}
    for rank, i in enumerate(order):
        if best_iou[i] > iou_threshold:
            j = best_gt[i]
            if gts[images[i]][1][j]:
                continue  # difficult object: ignored
            if not taken[images[i]][j]:
                tp[rank] = 1
                taken[images[i]][j] = True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    if num_gt == 0:
        return ClassAP(name, float("nan"), 0, num_difficult, len(dets), np.full(len(dets), np.nan), precision)
    recall = ctp / num_gt
    return ClassAP(
        name, voc_ap(recall, precision, use_07_metric), num_gt, num_difficult, len(dets), recall, precision
    )


def evaluate_dota(
    detections: Mapping[str, Sequence[Detection]],
    ground_truth: Mapping[str, DotaLabels],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> DotaEvalResult:
    """Mean AP of polygon detections against DOTA ground truth.

    Args:
        detections: per class name, a list of ``(image_id, score, polygon8)``.
        ground_truth: per image id, its :class:`~rsvit.data.detection.labels.DotaLabels`.
        classes: classes to evaluate (and their order in the result).
        iou_threshold: a match needs polygon IoU strictly above this.
        use_07_metric: 11-point VOC 2007 AP (DOTA's default) or area under the curve.

    Returns:
        A :class:`DotaEvalResult`; classes without non-difficult ground truth get AP ``nan`` and are
        left out of the mean. Detections on images missing from ``ground_truth`` count as false positives.
    """
    unknown = sorted(c for c, dets in detections.items() if dets and c not in set(classes))
    if unknown:
        raise ValueError(f"detections for classes not in the class list: {unknown}")
    per_class = {}
    for name in classes:
        gts = {}
        for img, labels in ground_truth.items():
            sel = np.array([c == name for c in labels.classes], dtype=bool)
            gts[img] = (labels.polygons[sel], labels.difficult[sel] != 0)
        per_class[name] = _evaluate_class(name, detections.get(name, []), gts, iou_threshold, use_07_metric)
    aps = [c.ap for c in per_class.values() if not math.isnan(c.ap)]
    return DotaEvalResult(
        per_class, float(np.mean(aps)) if aps else float("nan"), iou_threshold, use_07_metric
    )


PerClassDetections = dict[str, list[Detection]]


def merge_process_results(
    parts: Sequence[tuple[Mapping[str, Sequence[Detection]], Mapping[str, DotaLabels]]],
) -> tuple[PerClassDetections, dict[str, DotaLabels]]:
    """One evaluation's detections and ground truth from the parts each process saw.

    An image seen by several processes (a distributed sampler repeats a few images to even out the
    shards) counts once: the first part that has it keeps its ground truth and its detections, the
    detections of that image in later parts are dropped, so repeats add no false positives.
    """
    found: PerClassDetections = {}
    truth: dict[str, DotaLabels] = {}
    for part_found, part_truth in parts:
        own = {image_id for image_id in part_truth if image_id not in truth}
        truth.update({image_id: part_truth[image_id] for image_id in own})
        for name, dets in part_found.items():
            kept = [d for d in dets if d[0] in own]
            if kept or name not in found:
                found.setdefault(name, []).extend(kept)
    return found, truth


def gather_evaluation(
    found: Mapping[str, Sequence[Detection]],
    truth: Mapping[str, DotaLabels],
    all_gather_object: Any = None,
    world_size: int | None = None,
) -> tuple[PerClassDetections, dict[str, DotaLabels]]:
    """Every process's detections and ground truth, merged (:func:`merge_process_results`) on each.

    Uses ``torch.distributed.all_gather_object`` when a process group of more than one process is
    running; alone, the inputs come back as they are. ``all_gather_object`` / ``world_size`` replace
    the collective (tests, other launchers).
    """
    if all_gather_object is None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return {name: list(dets) for name, dets in found.items()}, dict(truth)
        all_gather_object, world_size = dist.all_gather_object, dist.get_world_size()
    if world_size is None:
        raise ValueError("give world_size with all_gather_object")
    parts: list[Any] = [None] * world_size
    all_gather_object(parts, (dict(found), dict(truth)))
    return merge_process_results(parts)


def _fmt(v: float) -> str:
    return f"{v:.6g}" if not float(v).is_integer() else str(int(v))


def write_task1_submission(
    folder: str | os.PathLike[str],
    detections: Mapping[str, Sequence[Detection]],
    classes: Sequence[str],
    prefix: str = "Task1_",
) -> list[Path]:
    """Write the DOTA oriented-box (Task 1) submission: one ``Task1_<class>.txt`` per class.

    Each line is ``image_id score x1 y1 x2 y2 x3 y3 x4 y4``. Every class gets a file, empty if it has
    no detections, as the evaluation server expects. Files are written atomically.
    """
    folder = Path(folder)
    paths = []
    for name in classes:
        lines = []
        for image_id, score, poly in detections.get(name, []):
            coords = np.asarray(poly, dtype=np.float64).reshape(8)
            if any(ch.isspace() for ch in image_id):
                raise ValueError(f"image id {image_id!r} contains whitespace")
            lines.append(" ".join([image_id, f"{float(score):.6g}", *(f"{c:.2f}" for c in coords)]))
        path = folder / f"{prefix}{name}.txt"
        atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
        paths.append(path)
    return paths


def read_task1_submission(
    folder: str | os.PathLike[str], classes: Sequence[str], prefix: str = "Task1_"
) -> dict[str, list[Detection]]:
    """Read a Task 1 submission folder back; a malformed line raises with its file and line number."""
    folder = Path(folder)
    out: dict[str, list[Detection]] = {}
    for name in classes:
        path = folder / f"{prefix}{name}.txt"
        if not path.exists():
            raise FileNotFoundError(f"submission file missing for class {name!r}: {path}")
        dets: list[Detection] = []
        for line_no, raw in enumerate(path.read_text().splitlines(), start=1):
            if not raw.strip():
                continue
            fields = raw.split()
            if len(fields) != 10:
                raise ValueError(
                    f"{path}:{line_no}: expected 10 fields (image score 8 coordinates), got {len(fields)}"
                )
            try:
                values = [float(v) for v in fields[1:]]
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: score and coordinates must be numbers: {raw!r}"
                ) from None
            dets.append((fields[0], values[0], values[1:]))
        out[name] = dets
    return out
