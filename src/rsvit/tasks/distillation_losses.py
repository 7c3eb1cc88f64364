"""Distillation losses: soft targets with temperature, hard teacher labels, projected stage features.

Every loss takes logits with the classes on dimension 1, so the same function serves scene
classification ``(B, K)`` and dense tasks ``(B, K, H, W)``, where it is applied per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureProjector", "feature_loss", "hard_teacher_loss", "resize_like", "soft_kl_loss"]


def resize_like(logits: Tensor, reference: Tensor) -> Tensor:
    """Bilinearly resizes dense ``logits`` to the spatial size of ``reference`` (no-op when equal)."""
    if logits.dim() < 3 or logits.shape[2:] == reference.shape[2:]:
        return logits
    return F.interpolate(logits, size=reference.shape[2:], mode="bilinear", align_corners=False)


def soft_kl_loss(student: Tensor, teacher: Tensor, temperature: float, valid: Tensor | None = None) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over samples (and pixels).

    The ``T^2`` keeps the gradient scale of the soft term independent of the temperature (Hinton et al.).

    Args:
        student: logits ``(B, K, ...)``.
        teacher: logits of the same shape.
        temperature: softening ``T > 0``.
        valid: optional boolean ``(B, ...)``: positions that count (e.g. not padding).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    per_position = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    if valid is not None:
        per_position = per_position[valid]
    if per_position.numel() == 0:
        return student.sum() * 0.0
    return per_position.mean() * temperature**2


def hard_teacher_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Cross-entropy of the student against the teacher's arg-max (per pixel for dense logits)."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=1))


class FeatureProjector(nn.Module):
    """1x1 convolutions mapping student stage maps to the channels of the matched teacher stages.

    Args:
        student_channels, teacher_channels: channels of the matched stages, in the same order.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(
                f"{len(student_channels)} student stages for {len(teacher_channels)} teacher ones"
            )
        self.convs = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1) for s, t in zip(student_channels, teacher_channels, strict=True)
        )

    def forward(self, student: Sequence[Tensor]) -> list[Tensor]:
        return [conv(x) for conv, x in zip(self.convs, student, strict=True)]


def feature_loss(projected: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean over stages of the MSE between projected student maps and the teacher maps.

    The student maps are resized to the teacher's grid.
    """
    if not projected:
        raise ValueError("no stages to match")
    losses = [
        F.mse_loss(resize_like(s.float(), t), t.float()) for s, t in zip(projected, teacher, strict=True)
    ]
    return torch.stack(losses).mean()
