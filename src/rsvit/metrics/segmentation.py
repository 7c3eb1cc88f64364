"""Semantic-segmentation scores from one confusion matrix: IoU, F1, precision, recall and accuracy.

The means skip classes absent from both labels and predictions, as mmseg does; the paper reports mF1 on
Potsdam and mIoU on iSAID.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["confusion_metrics"]


def _nanmean(values: Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else float("nan")


def confusion_metrics(confusion: Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """IoU, F1, precision, recall per class and their means, plus overall accuracy.

    ``confusion[i, j]`` counts pixels of true class ``i`` predicted as ``j``. Per-class values are NaN
    when undefined (class absent from labels and predictions); means skip NaN.
    """
    cm = confusion.double()
    tp = cm.diag()
    pred = cm.sum(0)
    true = cm.sum(1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(true + pred - tp > 0, tp / (true + pred - tp), nan)
    precision = torch.where(pred > 0, tp / pred, torch.where(true > 0, 0.0, nan))
    recall = torch.where(true > 0, tp / true, nan)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.where(true > 0, 0.0, nan)
    )
    total = cm.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    per_class = {
        name: {
            "IoU": float(iou[i]),
            "F1": float(f1[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "mIoU": _nanmean(iou),
        "mF1": _nanmean(f1),
        "mPrecision": _nanmean(precision),
        "mRecall": _nanmean(recall),
        "OA": float(tp.sum() / total) if total > 0 else float("nan"),
        "per_class": per_class,
    }
