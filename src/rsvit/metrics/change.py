"""Change-detection scores exactly as the official BIT evaluation computes them, plus a per-image view.

The official evaluation sums one 2x2 confusion matrix ``cm[gt, pred]`` over the whole evaluation set
and derives every score once from that sum, adding ``eps = float32 eps`` to every denominator (so a
class that never occurs scores 0 rather than NaN). The BIT paper (Chen et al., TGRS 2022) reports the
change-class F1 / IoU / precision / recall and OA from this global matrix. The RSP paper's change
numbers instead average per-batch (batch 8) binary scores; the per-image mean offered here is that
average for a batch size of one and is usually lower than the global value.

Scores are computed in float64, like the official NumPy code.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "OFFICIAL_EPS",
    "ChangeDetectionMetrics",
    "ConfusionMatrixMeter",
    "change_class_scores",
    "confusion_matrix",
    "confusion_matrix_scores",
    "per_image_confusion_matrices",
]

OFFICIAL_EPS: float = float(torch.finfo(torch.float32).eps)

_CHANGE_KEYS = ("F1", "IoU", "precision", "recall", "OA")


def _as_labels(pred: Tensor, num_classes: int) -> Tensor:
    """Class indices (B, H, W) from logits (B, C, H, W) or from index maps (B, H, W) / (B, 1, H, W)."""
    if pred.is_floating_point() and pred.ndim == 4 and pred.shape[1] == num_classes and num_classes > 1:
        return pred.argmax(dim=1)
    if pred.ndim == 4 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.is_floating_point():
        raise ValueError(
            f"pred must be logits (B, {num_classes}, H, W) or integer class maps, "
            f"got a float tensor of shape {tuple(pred.shape)}"
        )
    return pred


def _prepare(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    pred = _as_labels(pred, num_classes)
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(
            f"predicted classes must lie in [0, {num_classes}), got {int(pred.min())}..{int(pred.max())}"
        )
    return pred.long(), target.long()


def per_image_confusion_matrices(pred: Tensor, target: Tensor, num_classes: int = 2) -> Tensor:
    """(B, C, C) int64 matrices ``cm[b, gt, pred]``; target pixels outside [0, C) (e.g. 255) are ignored.

    ``pred`` may be logits (B, C, H, W) (argmax is taken) or class indices (B, H, W).
    """
    pred, target = _prepare(pred, target, num_classes)
    if pred.ndim != 3:
        raise ValueError(f"expected a batch of (B, H, W) label maps, got shape {tuple(pred.shape)}")
    batch = pred.shape[0]
    pred, target = pred.reshape(batch, -1), target.reshape(batch, -1)
    valid = (target >= 0) & (target < num_classes)
    cell = num_classes * target + pred
    offset = torch.arange(batch, device=pred.device)[:, None] * num_classes**2
    counts = torch.bincount((cell + offset)[valid], minlength=batch * num_classes**2)
    return counts.reshape(batch, num_classes, num_classes)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int = 2) -> Tensor:
    """One (C, C) int64 matrix ``cm[gt, pred]`` summed over the batch (the official accumulation)."""
    return per_image_confusion_matrices(pred, target, num_classes).sum(dim=0)


def _score_tensors(cm: Tensor, eps: float) -> dict[str, Tensor]:
    """Official formulas on (..., C, C) matrices; per-class tensors have a trailing C axis."""
    cm = cm.double()
    tp = cm.diagonal(dim1=-2, dim2=-1)
    gt_total = cm.sum(dim=-1)
    pred_total = cm.sum(dim=-2)
    recall = tp / (gt_total + eps)
    precision = tp / (pred_total + eps)
    f1 = 2 * recall * precision / (recall + precision + eps)
    iou = tp / (gt_total + pred_total - tp + eps)
    acc = tp.sum(dim=-1) / (cm.sum(dim=(-2, -1)) + eps)
    return {"acc": acc, "precision": precision, "recall": recall, "F1": f1, "iou": iou}


def confusion_matrix_scores(cm: Tensor, eps: float = OFFICIAL_EPS) -> dict[str, float]:
    """All official scores of one (C, C) matrix, with the official names.

    ``acc``, ``miou``, ``mf1``, ``iou_c``, ``F1_c``, ``precision_c``, ``recall_c`` (means ignore NaN
    classes).
    """
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {tuple(cm.shape)}")
    s = _score_tensors(cm, eps)
    out = {"acc": float(s["acc"]), "miou": float(s["iou"].nanmean()), "mf1": float(s["F1"].nanmean())}
    for name in ("iou", "F1", "precision", "recall"):
        for c, value in enumerate(s[name].tolist()):
            out[f"{name}_{c}"] = value
    return out


def change_class_scores(cm: Tensor, eps: float = OFFICIAL_EPS, change_class: int = 1) -> dict[str, Tensor]:
    """The paper's numbers for (..., C, C) matrices.

    Change-class ``F1``, ``IoU``, ``precision``, ``recall`` and the overall accuracy ``OA`` (float64
    tensors with the leading shape).
    """
    s = _score_tensors(cm, eps)
    return {
        "F1": s["F1"][..., change_class],
        "IoU": s["iou"][..., change_class],
        "precision": s["precision"][..., change_class],
        "recall": s["recall"][..., change_class],
        "OA": s["acc"],
    }


class ConfusionMatrixMeter:
    """Accumulator with the official evaluator's interface.

    ``update`` adds a batch and returns that batch's own mean F1 (what the official logs show),
    ``scores`` evaluates the running sum.
    """

    def __init__(self, num_classes: int = 2) -> None:
        self.num_classes = num_classes
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.cm.zero_()

    def update(self, pred: Tensor, target: Tensor) -> float:
        batch_cm = confusion_matrix(pred, target, self.num_classes).cpu()
        self.cm += batch_cm
        return confusion_matrix_scores(batch_cm)["mf1"]

    def scores(self) -> dict[str, float]:
        return confusion_matrix_scores(self.cm)


class ChangeDetectionMetrics(Metric):
    """Change-class F1, IoU, precision, recall and OA, global and per image.

    From the global confusion matrix (the official and BIT-paper definition, keys ``F1``...) and as
    means of per-image scores (keys ``per_image/F1``...).

    ``update(pred, target)``: ``pred`` logits (B, C, H, W) or class maps (B, H, W); ``target`` (B, H, W)
    or (B, 1, H, W), with values outside [0, C) (e.g. 255) ignored. States sum over processes.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int = 2, change_class: int = 1, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.change_class = change_class
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state(
            "image_score_sum", torch.zeros(len(_CHANGE_KEYS), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("num_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        cms = per_image_confusion_matrices(pred, target, self.num_classes)
        self.confmat += cms.sum(dim=0)
        per_image = change_class_scores(cms, change_class=self.change_class)
        self.image_score_sum += torch.stack([per_image[k].sum() for k in _CHANGE_KEYS])
        self.num_images += cms.shape[0]

    def compute(self) -> dict[str, Tensor]:
        out = change_class_scores(self.confmat, change_class=self.change_class)
        means = self.image_score_sum / self.num_images.clamp(min=1)
        for i, key in enumerate(_CHANGE_KEYS):
            out[f"per_image/{key}"] = means[i]
        return out
