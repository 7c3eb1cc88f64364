"""Checks of an exported model against the eager one, on real images.

The criterion: the largest absolute difference of the outputs is within ``tolerance`` (1e-4) of the
range of the eager outputs. Quantised graphs are judged by how often their per-pixel (or per-image)
class agrees with the float graph's instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsvit.models import ModelSpec
from rsvit.weights import WeightsMetadata

__all__ = [
    "Comparison",
    "DetectionComparison",
    "argmax_agreement",
    "compare",
    "compare_detections",
    "compare_models",
    "real_inputs",
]


@dataclass(frozen=True)
class Comparison:
    """How far an exported model's outputs are from the eager ones."""

    max_abs: float
    span: float
    tolerance: float = 1e-4

    @property
    def relative(self) -> float:
        return self.max_abs / self.span if self.span > 0 else self.max_abs

    @property
    def ok(self) -> bool:
        return self.relative <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "TOO FAR"
        return (
            f"max |diff| {self.max_abs:.3g} over an output range of {self.span:.3g} "
            f"(relative {self.relative:.2g}, limit {self.tolerance:g}): {verdict}"
        )


def compare(reference: torch.Tensor, candidate: torch.Tensor, tolerance: float = 1e-4) -> Comparison:
    """Largest difference of two outputs and the reference's value range, judged at ``tolerance``."""
    if tuple(reference.shape) != tuple(candidate.shape):
        raise ValueError(f"output shapes differ: {tuple(candidate.shape)} vs {tuple(reference.shape)}")
    reference, candidate = reference.detach().float().cpu(), candidate.detach().float().cpu()
    span = float(reference.max() - reference.min())
    return Comparison(float((reference - candidate).abs().max()), span, tolerance)


def compare_models(
    model: nn.Module,
    exported: Callable[..., torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, ...]],
    tolerance: float = 1e-4,
) -> Comparison:
    """Runs both on every batch and compares all outputs together (the worst difference counts)."""
    refs, outs = [], []
    with torch.no_grad():
        for batch in batches:
            refs.append(model(*batch).reshape(-1))
            outs.append(exported(*batch).reshape(-1))
    return compare(torch.cat(refs), torch.cat(outs), tolerance)


def argmax_agreement(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Share of pixels (or images) whose class is the same in both (dimension 1 holds the classes)."""
    if reference.dim() < 2 or reference.shape[1] < 2:
        raise ValueError("argmax agreement needs class scores in dimension 1")
    return float((reference.argmax(1) == candidate.argmax(1)).float().mean())


def _read_rgb(path: Path, window: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    height, width = window
    if array.shape[0] < height or array.shape[1] < width:
        size = f"{array.shape[0]}x{array.shape[1]}"
        raise ValueError(f"{path} is {size}, smaller than the {height}x{width} window")
    return array[:height, :width].transpose(2, 0, 1)


def _read_raster(path: Path, window: tuple[int, int], bands: int) -> np.ndarray:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        if src.count < bands:
            raise ValueError(f"{path} has {src.count} bands, the model takes {bands}")
        row, col = src.height // 2, src.width // 2
        return src.read(list(range(1, bands + 1)), window=Window(col, row, window[1], window[0]))


def _images(task: str, data_dir: Path, count: int) -> list[tuple[Path, ...]]:
    """Real sample images for a task, read in place from ``shared/data``."""
    if task == "classification":
        files = sorted((data_dir / "rsscn7-dev").glob("*/*.jpg"))[::100]
        return [(f,) for f in files[:count]]
    if task == "segmentation":
        files = sorted((data_dir / "dubai-seg").glob("Tile */images/*.jpg"))
        return [(f,) for f in files[:count]]
    if task == "detection":
        return [(f,) for f in sorted((data_dir / "dota-samples" / "images").glob("*.png"))[:count]]
    if task == "change":
        root = data_dir / "levir-cd-samples"
        names = sorted(p.name for p in (root / "A").glob("*.png"))[:count]
        return [(root / "A" / n, root / "B" / n) for n in names]
    return [(f,) for f in sorted((data_dir / "geotiff" / "naip").glob("*.tif"))[:count]]


def real_inputs(
    spec: ModelSpec,
    weights: WeightsMetadata,
    data_dir: str | os.PathLike[str],
    window: tuple[int, int],
    count: int = 2,
) -> list[tuple[torch.Tensor, ...]]:
    """Batches of one real image (two dates for change models) cut to ``window``.

    The images are scaled to 0-1 and normalised with the model's mean/std when it has them.

    Classification: RSSCN7 scenes; segmentation: Dubai tiles; change: LEVIR-CD pairs; detection: DOTA
    patches; regression: the NAIP rasters. Models with more than three bands read the NAIP rasters
    whatever the task.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} is not a folder of sample data")
    task = "regression" if spec.in_chans > 3 else spec.task
    groups = _images(task, data_dir, count)
    if not groups:
        raise FileNotFoundError(f"no sample images for {spec.task} models under {data_dir}")
    mean = torch.tensor(weights.mean or (0.0,) * spec.in_chans).view(1, -1, 1, 1)
    std = torch.tensor(weights.std or (1.0,) * spec.in_chans).view(1, -1, 1, 1)
    batches = []
    for group in groups:
        tensors = []
        for path in group:
            if task == "regression":
                array = _read_raster(path, window, spec.in_chans)
            else:
                array = _read_rgb(path, window)[: spec.in_chans]
            if array.shape[0] != spec.in_chans:
                raise ValueError(f"{path} gives {array.shape[0]} bands, the model takes {spec.in_chans}")
            x = torch.from_numpy(array.astype(np.float32) / 255.0).unsqueeze(0)
            tensors.append((x - mean) / std)
        batches.append(tuple(tensors))
    return batches


@dataclass(frozen=True)
class DetectionComparison:
    """How many eager detections an exported detector reproduces.

    A detection is reproduced when the exported detector returns one of the same class with every box
    coordinate within ``box_tolerance`` (px, radians) and the score within ``score_tolerance``. Float
    rounding between runtimes can decide a near tie at the NMS the other way (two overlapping boxes
    with scores equal to 1e-7: either survives), so the check passes when at least ``min_share`` of the
    detections of either side are reproduced, not only when all are.
    """

    count: int
    other_count: int
    matched: int
    box_max_abs: float
    score_max_abs: float
    box_tolerance: float = 1e-3
    score_tolerance: float = 1e-4
    min_share: float = 0.99

    @property
    def share(self) -> float:
        """Reproduced detections over the larger of the two counts (1 when both are empty)."""
        most = max(self.count, self.other_count)
        return self.matched / most if most else 1.0

    @property
    def ok(self) -> bool:
        return self.share >= self.min_share

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "TOO FAR"
        return (
            f"{self.matched} of {self.count} eager detections reproduced ({self.other_count} exported; "
            f"{self.share:.2%}, limit {self.min_share:.0%}): same class, box within {self.box_tolerance:g} "
            f"px, score within {self.score_tolerance:g}; largest differences of those: box "
            f"{self.box_max_abs:.3g} px, score {self.score_max_abs:.3g}: {verdict}"
        )


def _pair_detections(
    want: dict[str, torch.Tensor], got: dict[str, torch.Tensor], box_tolerance: float, score_tolerance: float
) -> tuple[int, float, float]:
    """Greedy one-to-one twins in eager score order: same class, nearest box within the tolerances."""
    used = torch.zeros(len(got["scores"]), dtype=torch.bool)
    matched, box_diff, score_diff = 0, 0.0, 0.0
    for box, score, label in zip(want["boxes"], want["scores"], want["labels"], strict=True):
        box_dist = (got["boxes"] - box).abs().amax(1)
        score_dist = (got["scores"] - score).abs()
        fits = (
            (got["labels"] == label) & (box_dist <= box_tolerance) & (score_dist <= score_tolerance) & ~used
        )
        if not bool(fits.any()):
            continue
        j = int(torch.where(fits, box_dist, torch.inf).argmin())
        used[j] = True
        matched += 1
        box_diff, score_diff = max(box_diff, float(box_dist[j])), max(score_diff, float(score_dist[j]))
    return matched, box_diff, score_diff


def compare_detections(
    model: nn.Module,
    exported: Callable[..., Any],
    batches: Sequence[tuple[torch.Tensor, ...]],
    box_tolerance: float = 1e-3,
    score_tolerance: float = 1e-4,
) -> DetectionComparison:
    """Runs both detectors on every batch; each returns one ``boxes, scores, labels`` dict per image."""
    count = other = matched = 0
    box_diff = score_diff = 0.0
    with torch.no_grad():
        for batch in batches:
            for want, got in zip(model(*batch), exported(*batch), strict=True):
                want = {k: v.detach().float().cpu() for k, v in want.items()}
                got = {k: v.detach().float().cpu() for k, v in got.items()}
                pairs, boxes, scores = _pair_detections(want, got, box_tolerance, score_tolerance)
                count, other, matched = (
                    count + len(want["scores"]),
                    other + len(got["scores"]),
                    matched + pairs,
                )
                box_diff, score_diff = max(box_diff, boxes), max(score_diff, scores)
    return DetectionComparison(count, other, matched, box_diff, score_diff, box_tolerance, score_tolerance)
