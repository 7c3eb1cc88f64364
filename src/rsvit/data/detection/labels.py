"""DOTA ``labelTxt`` files, DOTA class lists and the HRSC2016 XML annotations.

A ``labelTxt`` file has an optional header (``imagesource:<name>`` and ``gsd:<metres per pixel>``)
followed by one object per line::

    x1 y1 x2 y2 x3 y3 x4 y4 class-name difficult

Coordinates are image pixels (``y`` down); ``difficult`` is an integer flag (0 or 1 in the released
labels; any non-zero value counts as difficult) and may be missing, meaning 0. Detections use the same
lines with a confidence score in place of the flag (``x1 y1 ... y4 class-name 0.873``): a last field
written with a decimal point or an exponent is a score, and a file holds either scores on every
object line or none. Problems are reported
with the file name and line number. With ``on_error="raise"`` (the default) the first problem raises
:class:`DotaLabelError`; otherwise bad lines are skipped, listed in :attr:`DotaLabels.issues` and
(``"warn"``) announced in one warning that states how many lines were dropped.
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from rsvit.structures.class_names import (
    DOTA_CLASSES,
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DOTA_V2_0_CLASSES,
    HRSC2016_CLASSES,
)
from rsvit.structures.rotated_boxes import AngleConvention, obb_to_poly, poly_to_obb, regularize_obb
from rsvit.utils.atomic import atomic_write_text

__all__ = [
    "DOTA_CLASSES",
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "DOTA_V2_0_CLASSES",
    "HRSC2016_CLASSES",
    "IMAGE_SUFFIXES",
    "DotaDatasetError",
    "DotaLabelError",
    "DotaLabels",
    "HrscAnnotation",
    "LabelIssue",
    "concat_labels",
    "format_labels",
    "pair_images_and_labels",
    "parse_labels",
    "polygon_self_intersects",
    "read_hrsc2016_xml",
    "read_labels",
    "write_labels",
]


IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

OnError = Literal["raise", "warn", "skip"]

# Polygons with less area than this (square pixels) are treated as degenerate.
MIN_POLYGON_AREA = 1e-6


@dataclass(frozen=True)
class LabelIssue:
    """One rejected line of a label file."""

    path: str
    line: int
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}: {self.text!r}"


class DotaLabelError(ValueError):
    """A label line that cannot be used; the message names the file and line."""

    def __init__(self, issue: LabelIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


class DotaDatasetError(FileNotFoundError):
    """Images and label files of a dataset folder do not pair up."""


@dataclass
class DotaLabels:
    """Objects of one image.

    Attributes:
        polygons: ``(N, 8)`` float64 array ``(x1, y1, ..., x4, y4)`` in pixels.
        classes: ``N`` class names.
        difficult: ``(N,)`` int array; non-zero means difficult.
        image_source: value of the ``imagesource:`` header, if any.
        gsd: ground sampling distance from the ``gsd:`` header in metres, if any.
        source: file the labels were read from, if any.
        issues: lines that were skipped while reading (empty when reading raised on errors).
        scores: ``(N,)`` float64 confidence of each object for detections, ``None`` for ground truth.
    """

    polygons: np.ndarray
    classes: list[str]
    difficult: np.ndarray
    image_source: str | None = None
    gsd: float | None = None
    source: str | None = None
    issues: list[LabelIssue] = field(default_factory=list)
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.polygons = np.asarray(self.polygons, dtype=np.float64).reshape(-1, 8)
        self.difficult = np.asarray(self.difficult, dtype=np.int64).reshape(-1)
        self.classes = list(self.classes)
        if not (len(self.polygons) == len(self.classes) == len(self.difficult)):
            raise ValueError(
                f"polygons, classes and difficult disagree in length: "
                f"{len(self.polygons)}, {len(self.classes)}, {len(self.difficult)}"
            )
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(self.scores) != len(self.classes):
                raise ValueError(f"{len(self.scores)} scores for {len(self.classes)} objects")
            if not np.isfinite(self.scores).all():
                raise ValueError("scores must be finite")

    def __len__(self) -> int:
        return len(self.classes)

    @classmethod
    def empty(cls, **kwargs: object) -> DotaLabels:
        return cls(np.zeros((0, 8)), [], np.zeros(0, dtype=np.int64), **kwargs)  # type: ignore[arg-type]

    def select(self, index: np.ndarray | Sequence[int]) -> DotaLabels:
        """A subset (boolean mask or indices) with the same header."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            polygons=self.polygons[idx],
            classes=[self.classes[i] for i in idx],
            difficult=self.difficult[idx],
            issues=list(self.issues),
            scores=None if self.scores is None else self.scores[idx],
        )

    def obbs(self, convention: AngleConvention = "le90") -> torch.Tensor:
        """``(N, 5)`` float64 minimum-area rotated rectangles of the polygons."""
        return poly_to_obb(torch.from_numpy(self.polygons), convention)

    def labels(self, classes: Sequence[str]) -> np.ndarray:
        """``(N,)`` int64 class indices into ``classes`` (raises on a class not in the list)."""
        lookup = {c: i for i, c in enumerate(classes)}
        missing = sorted({c for c in self.classes if c not in lookup})
        if missing:
            raise KeyError(f"classes {missing} are not in the class list")
        return np.array([lookup[c] for c in self.classes], dtype=np.int64)


def polygon_self_intersects(polygons: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: whether each quadrilateral ``(N, 8)`` has two opposite edges that cross.

    A quadrilateral's only possible self-intersection is a crossing of opposite edges (a "bow tie"),
    so two proper segment-crossing tests per polygon decide it.
    """
    p = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    def cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
        return (orient(a, b, c) * orient(a, b, d) < 0) & (orient(c, d, a) * orient(c, d, b) < 0)

    return cross(p[:, 0], p[:, 1], p[:, 2], p[:, 3]) | cross(p[:, 1], p[:, 2], p[:, 3], p[:, 0])


def _polygon_area(polygons: np.ndarray) -> np.ndarray:
    p = polygons.reshape(-1, 4, 2)
    x, y = p[..., 0], p[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))


def _parse_gsd(value: str) -> float | None:
    v = value.strip()
    if v.lower() in ("", "null", "none", "nan"):
        return None
    gsd = float(v)
    if not math.isfinite(gsd) or gsd <= 0:
        raise ValueError(f"gsd must be a positive number, got {v!r}")
    return gsd


def parse_labels(
    text: str,
    source: str = "<string>",
    classes: Sequence[str] | None = None,
    on_error: OnError = "raise",
    check_geometry: bool = True,
) -> DotaLabels:
    """Parse the text of a ``labelTxt`` file.

    Args:
        text: file contents.
        source: name used in messages (usually the file path).
        classes: allowed class names; ``None`` accepts any name.
        on_error: ``"raise"`` on the first bad line, or ``"warn"``/``"skip"`` to drop bad lines (both
            record them in :attr:`DotaLabels.issues`; ``"warn"`` also emits one warning with the count).
        check_geometry: reject zero-area and self-intersecting polygons.
    """
    if on_error not in ("raise", "warn", "skip"):
        raise ValueError(f"on_error must be 'raise', 'warn' or 'skip', got {on_error!r}")
    allowed = None if classes is None else set(classes)
    polys: list[list[float]] = []
    names: list[str] = []
    flags: list[int] = []
    scores: list[float] = []
    scored: bool | None = None  # set by the first object line: detections (scores) or ground truth
    issues: list[LabelIssue] = []
    image_source: str | None = None
    gsd: float | None = None
    lines = text.splitlines()

    def reject(line_no: int, reason: str, raw: str) -> None:
        issue = LabelIssue(source, line_no, reason, raw)
        if on_error == "raise":
            raise DotaLabelError(issue)
        issues.append(issue)

    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "imagesource" and " " not in key.strip():
            image_source = value.strip() or None
            continue
        if sep and key.strip().lower() == "gsd":
            try:
                gsd = _parse_gsd(value)
            except ValueError as err:
                reject(line_no, f"bad gsd header ({err})", raw)
            continue
        fields = line.split()
        numeric = 0
        while numeric < len(fields) and _is_float(fields[numeric]):
            numeric += 1
        names_class = numeric < len(fields) and not _is_float(fields[numeric])
        if numeric != 8 and names_class and len(fields) - numeric <= 2:
            reject(line_no, f"expected 8 coordinates before the class name, found {numeric}", raw)
            continue
        if len(fields) not in (9, 10):
            reject(
                line_no,
                f"expected 8 coordinates, a class name and an optional difficult flag (9 or 10 fields), "
                f"got {len(fields)} fields",
                raw,
            )
            continue
        try:
            coords = [float(v) for v in fields[:8]]
        except ValueError:
            bad = next(v for v in fields[:8] if not _is_float(v))
            reject(line_no, f"coordinate {bad!r} is not a number", raw)
            continue
        if not all(math.isfinite(c) for c in coords):
            reject(line_no, "coordinates must be finite", raw)
            continue
        name = fields[8]
        if allowed is not None and name not in allowed:
            reject(line_no, f"unknown class {name!r} (known: {', '.join(sorted(allowed))})", raw)
            continue
        difficult, score = 0, None
        if len(fields) == 10 and _is_score(fields[9]):
            score = float(fields[9])
            if not math.isfinite(score):
                reject(line_no, "score must be finite", raw)
                continue
        elif len(fields) == 10:
            try:
                difficult = int(fields[9])
            except ValueError:
                reject(line_no, f"difficult flag {fields[9]!r} is not an integer", raw)
                continue
            if difficult < 0:
                reject(line_no, f"difficult flag must be >= 0, got {difficult}", raw)
                continue
        if scored is not None and scored != (score is not None):
            kind = "a score" if scored else "no score"
            reject(
                line_no, f"earlier object lines have {kind}; a file holds scores on all lines or none", raw
            )
            continue
        if check_geometry:
            poly = np.array(coords, dtype=np.float64)
            if polygon_self_intersects(poly)[0]:
                reject(line_no, "polygon intersects itself (corners out of order)", raw)
                continue
            if _polygon_area(poly)[0] < MIN_POLYGON_AREA:
                reject(line_no, "polygon has zero area", raw)
                continue
        polys.append(coords)
        names.append(name)
        flags.append(difficult)
        scored = score is not None
        if score is not None:
            scores.append(score)

    if issues and on_error == "warn":
        shown = "; ".join(str(i) for i in issues[:3])
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        warnings.warn(
            f"{source}: skipped {len(issues)} of {len(issues) + len(names)} object lines: {shown}{more}",
            stacklevel=2,
        )
    return DotaLabels(
        polygons=np.array(polys, dtype=np.float64).reshape(-1, 8),
        classes=names,
        difficult=np.array(flags, dtype=np.int64),
        image_source=image_source,
        gsd=gsd,
        source=source,
        issues=issues,
        scores=np.array(scores, dtype=np.float64) if scored else None,
    )


def _is_score(v: str) -> bool:
    """A number written with a decimal point or an exponent (a difficult flag is a plain integer)."""
    return _is_float(v) and any(ch in v for ch in ".eE") and v.lower().lstrip("+-") not in ("inf", "nan")


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def read_labels(
    path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    on_error: OnError = "raise",
    check_geometry: bool = True,
) -> DotaLabels:
    """Read a ``labelTxt`` file; see :func:`parse_labels` for the options."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DotaLabelError(LabelIssue(str(path), 0, f"not UTF-8 text ({err.reason})", "")) from err
    return parse_labels(text, str(path), classes, on_error, check_geometry)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def format_labels(labels: DotaLabels, header: bool = True) -> str:
    """``labelTxt`` text for ``labels``; coordinates are written exactly (integers without decimals).

    Detections (``labels.scores`` set) get their score as the last field, written exactly and always
    with a decimal point or exponent, so :func:`parse_labels` reads it back as a score.
    """
    out = []
    if header and labels.image_source is not None:
        out.append(f"imagesource:{labels.image_source}")
    if header and labels.gsd is not None:
        out.append(f"gsd:{_fmt(labels.gsd)}")
    if labels.scores is None:
        last = [str(int(d)) for d in labels.difficult]
    else:
        last = [repr(float(v)) for v in labels.scores]
    for poly, name, tail in zip(labels.polygons, labels.classes, last, strict=True):
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"class name {name!r} cannot be written to a labelTxt line")
        out.append(" ".join([*(_fmt(v) for v in poly), name, tail]))
    return "\n".join(out) + ("\n" if out else "")


def write_labels(path: str | os.PathLike[str], labels: DotaLabels, header: bool = True) -> None:
    """Write a ``labelTxt`` file atomically."""
    atomic_write_text(path, format_labels(labels, header))


def pair_images_and_labels(
    root: str | os.PathLike[str],
    image_dir: str = "images",
    label_dir: str = "labelTxt",
    require_images: bool = True,
    label_suffix: str = ".txt",
) -> list[tuple[Path | None, Path]]:
    """Match every label file (``label_suffix``: ``.txt`` for DOTA, ``.xml`` for HRSC2016) with its image.

    Returns ``(image_path, label_path)`` pairs sorted by name. A label without an image raises
    :class:`DotaDatasetError` naming the files (``require_images=False`` returns ``None`` for the image
    instead, e.g. for label-only statistics). Images without labels are reported in a warning with
    their count, since they cannot be used for training or evaluation.
    """
    root = Path(root)
    labels_root = root / label_dir
    if not labels_root.is_dir():
        raise DotaDatasetError(f"label folder not found: {labels_root}")
    images_root = root / image_dir
    images: dict[str, Path] = {}
    if images_root.is_dir():
        for p in sorted(images_root.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in images:
                    raise DotaDatasetError(f"two images share the name {p.stem!r}: {images[p.stem]} and {p}")
                images[p.stem] = p
    elif require_images:
        raise DotaDatasetError(
            f"image folder not found: {images_root} (needed for the labels in {labels_root})"
        )
    label_files = sorted(p for p in labels_root.iterdir() if p.suffix == label_suffix)
    missing = [p for p in label_files if p.stem not in images]
    if missing and require_images:
        listed = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DotaDatasetError(
            f"{len(missing)} of {len(label_files)} label files in {labels_root} have no image "
            f"({'/'.join(IMAGE_SUFFIXES)}) in {images_root}: {listed}"
        )
    label_stems = {p.stem for p in label_files}
    orphans = sorted(set(images) - label_stems)
    if orphans:
        warnings.warn(
            f"{len(orphans)} images in {images_root} have no label file in {labels_root} and are ignored: "
            + ", ".join(orphans[:5])
            + (" ..." if len(orphans) > 5 else ""),
            stacklevel=2,
        )
    return [(images.get(p.stem), p) for p in label_files]


@dataclass
class HrscAnnotation:
    """One HRSC2016 image's objects.

    Attributes:
        image_id: ``Img_ID``. width, height: image size in pixels.
        boxes: ``(N, 5)`` float64 ``(cx, cy, w, h, angle)`` in the requested angle convention.
        polygons: ``(N, 8)`` corners of those boxes.
        class_ids: ``(N,)`` HRSC ``Class_ID`` values. difficult: ``(N,)`` int flags.
    """

    image_id: str
    width: int
    height: int
    boxes: np.ndarray
    polygons: np.ndarray
    class_ids: np.ndarray
    difficult: np.ndarray

    def to_dota(self, class_name: str = "ship") -> DotaLabels:
        """The objects as :class:`DotaLabels` with a single class name."""
        return DotaLabels(self.polygons, [class_name] * len(self.polygons), self.difficult)


def read_hrsc2016_xml(path: str | os.PathLike[str], convention: AngleConvention = "le90") -> HrscAnnotation:
    """Read an HRSC2016 annotation file (``HRSC_Image`` root with ``HRSC_Objects/HRSC_Object``).

    Each object's rotated box comes from ``mbox_cx``, ``mbox_cy``, ``mbox_w``, ``mbox_h`` and
    ``mbox_ang`` (radians, same image-axis rotation as :mod:`rsvit.ops`), regularised to
    ``convention``. Missing or non-numeric fields raise ``ValueError`` naming the file and object.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not valid XML ({err})") from err

    def text(node: ET.Element, tag: str, where: str) -> str:
        child = node.find(tag)
        if child is None or child.text is None or not child.text.strip():
            raise ValueError(f"{path}: {where} has no <{tag}>")
        return child.text.strip()

    def number(node: ET.Element, tag: str, where: str) -> float:
        raw = text(node, tag, where)
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{path}: {where} <{tag}> is not a number: {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}: {where} <{tag}> is not finite: {raw!r}")
        return value

    image_id = text(root, "Img_ID", "the image")
    width = int(number(root, "Img_SizeWidth", "the image"))
    height = int(number(root, "Img_SizeHeight", "the image"))
    rows, ids, diffs = [], [], []
    objects = root.find("HRSC_Objects")
    for k, obj in enumerate([] if objects is None else objects.findall("HRSC_Object"), start=1):
        where = f"object {k}"
        rows.append([number(obj, t, where) for t in ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")])
        ids.append(int(number(obj, "Class_ID", where)) if obj.find("Class_ID") is not None else 0)
        diffs.append(int(number(obj, "difficult", where)) if obj.find("difficult") is not None else 0)
    boxes = regularize_obb(torch.tensor(rows, dtype=torch.float64).reshape(-1, 5), convention)
    return HrscAnnotation(
        image_id=image_id,
        width=width,
        height=height,
        boxes=boxes.numpy(),
        polygons=obb_to_poly(boxes).numpy(),
        class_ids=np.array(ids, dtype=np.int64),
        difficult=np.array(diffs, dtype=np.int64),
    )


def concat_labels(parts: Iterable[DotaLabels]) -> DotaLabels:
    """Concatenate the objects of several :class:`DotaLabels` (header of the first)."""
    parts = list(parts)
    if not parts:
        return DotaLabels.empty()
    scored = [p.scores is not None for p in parts]
    if any(scored) and not all(scored):
        raise ValueError("cannot concatenate detections (with scores) and ground truth (without)")
    return DotaLabels(
        np.concatenate([p.polygons for p in parts]),
        [c for p in parts for c in p.classes],
        np.concatenate([p.difficult for p in parts]),
        image_source=parts[0].image_source,
        gsd=parts[0].gsd,
        scores=np.concatenate([p.scores for p in parts]) if all(scored) else None,  # type: ignore[misc]
    )
