"""Change-detection metrics against the official evaluation's numbers (``bit_metrics_loss.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.metrics import (
    OFFICIAL_EPS,
    ChangeDetectionMetrics,
    ConfusionMatrixMeter,
    change_class_scores,
    confusion_matrix,
    confusion_matrix_scores,
    per_image_confusion_matrices,
)


@pytest.fixture(scope="module")
def cases(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "fixtures/bit_metrics_loss.json").read_text())["cases"]


def _assert_scores(ours: dict[str, float], official: dict[str, float]) -> None:
    assert set(ours) == set(official)
    for key, value in official.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_eps_is_float32_eps():
    assert float(np.finfo(np.float32).eps) == OFFICIAL_EPS


def test_rolled_real_labels_reproduce_official_scores(cases, data_dir):
    case = cases["rolled_labels_all_samples"]
    meter = ConfusionMatrixMeter()
    running = []
    for name in case["files"]:
        gt = np.asarray(Image.open(data_dir / "levir-cd-samples/label" / name)) // 255
        pred = np.roll(gt, 5, axis=1)
        running.append(meter.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]))
    assert meter.cm.tolist() == case["confusion_matrix_rows_gt_cols_pred"]
    assert running == pytest.approx(case["running_mf1_per_update"], rel=1e-12)
    _assert_scores(meter.scores(), case["scores"])


def test_all_zero_case_follows_the_eps_rule(cases):
    case = cases["all_zero_gt_and_pred"]
    zeros = torch.zeros(1, 256, 256, dtype=torch.uint8)
    cm = confusion_matrix(zeros, zeros)
    assert cm.tolist() == case["confusion_matrix_rows_gt_cols_pred"]
    _assert_scores(confusion_matrix_scores(cm), case["scores"])
    change = change_class_scores(cm)
    assert change["F1"].item() == 0.0 and change["IoU"].item() == 0.0


def test_confusion_matrix_against_numpy_and_ignore_index():
    gen = torch.Generator().manual_seed(3)
    target = torch.randint(0, 2, (3, 17, 23), generator=gen)
    target[0, :4] = 255
    logits = torch.randn(3, 2, 17, 23, generator=gen)
    pred = logits.argmax(1)
    t, p = target.numpy(), pred.numpy()
    expected = np.array([[np.sum((t == g) & (p == q)) for q in (0, 1)] for g in (0, 1)])
    assert np.array_equal(confusion_matrix(logits, target).numpy(), expected)
    assert np.array_equal(confusion_matrix(pred, target[:, None]).numpy(), expected)
    per_image = per_image_confusion_matrices(pred, target)
    assert per_image.shape == (3, 2, 2)
    assert per_image[0].sum().item() == 17 * 23 - 4 * 23
    assert torch.equal(per_image.sum(0), confusion_matrix(pred, target))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(1, 8, 8, dtype=torch.long), torch.zeros(1, 8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(torch.full((1, 4, 4), 2), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        confusion_matrix(torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        confusion_matrix(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_metric_global_and_per_image_views():
    gen = torch.Generator().manual_seed(5)
    target = (torch.rand(4, 16, 16, generator=gen) < 0.3).long()
    pred = torch.where(torch.rand(4, 16, 16, generator=gen) < 0.2, 1 - target, target)
    pred[3] = 0
    target[3] = 0  # an image without change: per-image F1 is 0 there (eps rule), globally it only adds TN

    metric = ChangeDetectionMetrics()
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    scores = metric.compute()

    cm = confusion_matrix(pred, target).numpy().astype(np.float64)
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    assert scores["precision"].item() == pytest.approx(tp / (tp + fp), rel=1e-6)
    assert scores["recall"].item() == pytest.approx(tp / (tp + fn), rel=1e-6)
    assert scores["IoU"].item() == pytest.approx(tp / (tp + fp + fn), rel=1e-6)
    assert scores["OA"].item() == pytest.approx(np.trace(cm) / cm.sum(), rel=1e-9)

    f1s = []
    for p, t in zip(pred.numpy(), target.numpy(), strict=True):
        tp_i, fp_i, fn_i = (
            np.sum((p == 1) & (t == 1)),
            np.sum((p == 1) & (t == 0)),
            np.sum((p == 0) & (t == 1)),
        )
        f1s.append(0.0 if tp_i == 0 else 2 * tp_i / (2 * tp_i + fp_i + fn_i))
    assert f1s[3] == 0.0
    assert scores["per_image/F1"].item() == pytest.approx(np.mean(f1s), rel=1e-6)
    assert scores["per_image/F1"].item() < scores["F1"].item()

    metric.reset()
    metric.update(pred, target)
    assert metric.compute()["F1"].item() == pytest.approx(scores["F1"].item(), rel=1e-12)
