"""Typed ground truth of one image for oriented detection, checked where it enters the model.

Boxes are ``(cx, cy, w, h, angle)`` in input pixels, le90 (see :mod:`rsvit.structures.rotated_boxes`), labels
0-based indices into the configured class list. Handling of bad annotations:

* wrong shapes or dtypes, non-finite values, labels outside the classes: ``ValueError`` naming what is
  wrong (for labels: the offending labels and the configured classes);
* degenerate boxes (``w`` or ``h`` below ``min_size`` px, default 0: zero or negative sides) and boxes
  lying entirely outside the image (their enclosing horizontal box misses it): dropped by
  :meth:`DetectionTargets.clean` with a ``UserWarning`` saying how many and why. Boxes partly outside
  the image are kept, as the official pipeline keeps objects cut by a patch border;
* no objects at all: valid; the image then only contributes background terms to the losses.

:meth:`rsvit.models.detection.OrientedRCNN.loss` runs the same checks but never drops anything: it
raises on degenerate boxes, so a data pipeline should call :meth:`DetectionTargets.clean` first.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rsvit.structures.rotated_boxes import obb_to_hbox

__all__ = ["DetectionTargets", "check_labels"]


def check_labels(labels: Tensor, num_classes: int, class_names: Sequence[str] | None = None) -> None:
    """Raises ``ValueError`` naming the labels outside ``[0, num_classes)`` and the configured classes."""
    if labels.numel() == 0:
        return
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        classes = (
            ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
            if class_names is not None
            else f"0..{num_classes - 1}"
        )
        raise ValueError(
            f"gt labels must be in [0, {num_classes}), got label(s) {sorted(set(bad.tolist()))}; "
            f"the detector is configured for {num_classes} classes ({classes})"
        )


@dataclass(frozen=True)
class DetectionTargets:
    """Ground truth of one image: ``boxes`` ``(G, 5)`` le90 pixels, ``labels`` ``(G,)`` int64.

    Construction checks shapes, dtypes and finiteness; :meth:`clean` drops unusable boxes and
    :meth:`check` validates the labels against the classes of a detector.
    """

    boxes: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[-1] != 5:
            raise ValueError(f"boxes must be (G, 5) (cx, cy, w, h, angle), got {tuple(self.boxes.shape)}")
        if not self.boxes.is_floating_point():
            raise ValueError(f"boxes must be floating point, got {self.boxes.dtype}")
        if self.labels.shape != self.boxes.shape[:1]:
            raise ValueError(
                f"need one label per box: {self.boxes.shape[0]} boxes, labels {tuple(self.labels.shape)}"
            )
        if self.labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"labels must be integer class indices, got {self.labels.dtype}")
        if self.boxes.numel() and not bool(torch.isfinite(self.boxes).all()):
            raise ValueError("boxes contain NaN or infinite values")

    @classmethod
    def from_names(cls, boxes: Tensor, names: Sequence[str], class_names: Sequence[str]) -> DetectionTargets:
        """Targets from class names (e.g. DOTA label files); unknown names raise, listing the classes."""
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({n for n in names if n not in index})
        if unknown:
            raise ValueError(
                f"unknown class name(s) {unknown}; the configured classes are {list(class_names)}"
            )
        labels = torch.tensor([index[n] for n in names], dtype=torch.long, device=boxes.device)
        return cls(boxes, labels)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def check(self, num_classes: int, class_names: Sequence[str] | None = None) -> DetectionTargets:
        """``self`` if every label is one of the ``num_classes`` classes, else ``ValueError``."""
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        check_labels(self.labels, num_classes, class_names)
        return self

    def clean(self, image_size: tuple[int, int] | None = None, min_size: float = 0.0) -> DetectionTargets:
        """Targets without degenerate boxes (side ``<= min_size``) and boxes wholly outside the image.

        Warns (``UserWarning``) with the number of dropped boxes and the reason.
        """
        keep = self.boxes[:, 2:4].amin(-1) > min_size
        dropped = {f"degenerate (w or h <= {min_size:g} px)": int((~keep).sum())}
        if image_size is not None and len(self):
            h, w = image_size
            hbb = obb_to_hbox(self.boxes)
            inside = (hbb[:, 2] > 0) & (hbb[:, 3] > 0) & (hbb[:, 0] < w) & (hbb[:, 1] < h)
            dropped[f"outside the {h}x{w} image"] = int((keep & ~inside).sum())
            keep = keep & inside
        reasons = [f"{n} {why}" for why, n in dropped.items() if n]
        if not reasons:
            return self
        warnings.warn(f"dropped {', '.join(reasons)} of {len(self)} ground-truth boxes", stacklevel=2)
        return DetectionTargets(self.boxes[keep], self.labels[keep].long())
