"""Distillation losses and the feature reader, against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rsvit.models.distillation import forward_with_features, has_stage_features
from rsvit.models.spec import ModelSpec, build_model
from rsvit.tasks.distillation_losses import FeatureProjector, feature_loss, hard_teacher_loss, soft_kl_loss


def _kl_by_hand(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    """KL(p_teacher || p_student) at temperature t, summed over classes, averaged over positions."""
    k = student.shape[1]
    s = student.double().movedim(1, -1).reshape(-1, k) / t
    q = teacher.double().movedim(1, -1).reshape(-1, k) / t
    total = 0.0
    for row_s, row_t in zip(s.tolist(), q.tolist(), strict=True):
        zs = math.log(sum(math.exp(v) for v in row_s))
        zt = math.log(sum(math.exp(v) for v in row_t))
        for vs, vt in zip(row_s, row_t, strict=True):
            pt = math.exp(vt - zt)
            total += pt * ((vt - zt) - (vs - zs))
    return total / s.shape[0] * t * t


@pytest.mark.parametrize("shape", [(4, 7), (2, 5, 3, 4)], ids=["scene", "dense"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_kl_equals_independent_computation(shape: tuple[int, ...], temperature: float) -> None:
    student, teacher = torch.randn(shape) * 3, torch.randn(shape) * 3
    got = soft_kl_loss(student, teacher, temperature)
    assert got.item() == pytest.approx(_kl_by_hand(student, teacher, temperature), rel=1e-5)
    if len(shape) == 2:  # and torch's own batch-mean KL
        reference = F.kl_div(
            F.log_softmax(student / temperature, 1),
            F.softmax(teacher / temperature, 1),
            reduction="batchmean",
        )
        assert got.item() == pytest.approx(reference.item() * temperature**2, rel=1e-5)


def test_soft_kl_is_zero_for_equal_logits_and_masks_positions() -> None:
    logits = torch.randn(2, 4, 3, 3)
    assert soft_kl_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 4, 3, 3)
    valid = torch.zeros(2, 3, 3, dtype=torch.bool)
    valid[0, 0, 0] = True
    expected = _kl_by_hand(other[:1, :, :1, :1], logits[:1, :, :1, :1], 2.0)
    assert soft_kl_loss(other, logits, 2.0, valid).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        soft_kl_loss(logits, logits, 0.0)


def test_hard_teacher_loss_uses_the_teacher_argmax() -> None:
    student, teacher = torch.randn(3, 5, 2, 2), torch.randn(3, 5, 2, 2)
    expected = F.cross_entropy(student, teacher.argmax(1))
    assert hard_teacher_loss(student, teacher).item() == pytest.approx(expected.item())


def test_feature_loss_projects_and_resizes_to_the_teacher_grid() -> None:
    projector = FeatureProjector([8], [16])
    student, teacher = [torch.randn(2, 8, 4, 4)], [torch.randn(2, 16, 8, 8)]
    projected = projector(student)
    assert projected[0].shape == (2, 16, 4, 4)
    loss = feature_loss(projected, teacher)
    resized = F.interpolate(projected[0], size=(8, 8), mode="bilinear", align_corners=False)
    assert loss.item() == pytest.approx(((resized - teacher[0]) ** 2).mean().item(), rel=1e-6)
    assert feature_loss(teacher, teacher).item() == 0.0
    with pytest.raises(ValueError, match="stages"):
        FeatureProjector([8, 4], [16])


def test_forward_with_features_returns_the_model_output() -> None:
    classifier = build_model(ModelSpec("classification", "resnet18", num_classes=3)).eval()
    segmentor = build_model(
        ModelSpec("segmentation", "resnet18", "fcn", num_classes=3, head_kwargs={"channels": 8})
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for model in (classifier, segmentor):
            assert has_stage_features(model)
            logits, stages = forward_with_features(model, x)
            torch.testing.assert_close(logits, model(x))
            assert stages and all(s.dim() == 4 and s.shape[0] == 2 for s in stages)
        assert forward_with_features(segmentor, x)[1][-1].shape[1] == 512  # resnet18's deepest stage
    with pytest.raises(ValueError, match="feature_weight"):
        forward_with_features(torch.nn.Linear(2, 2), torch.randn(1, 2))
