"""Depth / height metrics against NumPy hand computations, alignment, and sum-based accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvit.metrics.regression import (
    DEPTH_METRIC_NAMES,
    DepthMetrics,
    apply_scale_shift,
    depth_metrics,
    least_squares_scale_shift,
)


def _np_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, min_value: float = 1e-3) -> dict:
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    out = {"rmse": np.sqrt(np.mean((p - g) ** 2)), "mae": np.mean(np.abs(p - g))}
    pos = g > min_value
    p, g = np.maximum(p[pos], min_value), g[pos]
    out["abs_rel"] = np.mean(np.abs(p - g) / g)
    out["log10"] = np.mean(np.abs(np.log10(p) - np.log10(g)))
    ratio = np.maximum(p / g, g / p)
    for k in (1, 2, 3):
        out[f"delta{k}"] = np.mean(ratio < 1.25**k)
    return out


def test_metric_values_by_hand() -> None:
    gt = torch.tensor([[[1.0, 2.0, 4.0, 10.0, 0.0, 3.0]]])
    pred = torch.tensor([[[1.2, 1.0, 4.0, 20.0, 0.5, 99.0]]])
    valid = torch.tensor([[[True, True, True, True, True, False]]])
    got = depth_metrics(pred, gt, valid)
    # RMSE/MAE over the five valid pixels (ground at 0 included); ratio metrics over the four with gt > 0.
    assert got["rmse"].item() == pytest.approx(np.sqrt((0.04 + 1 + 0 + 100 + 0.25) / 5))
    assert got["mae"].item() == pytest.approx((0.2 + 1 + 0 + 10 + 0.5) / 5)
    assert got["abs_rel"].item() == pytest.approx((0.2 + 0.5 + 0 + 1.0) / 4)
    assert got["log10"].item() == pytest.approx((np.log10(1.2) + np.log10(2) + 0 + np.log10(2)) / 4, rel=1e-6)
    # ratios 1.2, 2, 1, 2 -> below 1.25: 2; below 1.5625: 2; below 1.953: 2
    assert got["delta1"].item() == pytest.approx(0.5)
    assert got["delta2"].item() == pytest.approx(0.5)
    assert got["delta3"].item() == pytest.approx(0.5)
    assert list(got) == list(DEPTH_METRIC_NAMES)


def test_metric_values_against_numpy_on_random_batch() -> None:
    gt = torch.rand(3, 20, 20) * 30
    gt[:, :4] = 0.0  # ground
    pred = gt + torch.randn(3, 20, 20) * 2
    valid = torch.rand(3, 20, 20) > 0.25
    got = depth_metrics(pred, gt, valid)
    want = _np_metrics(pred.numpy(), gt.numpy(), valid.numpy())
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-9), key


def test_alignment_recovers_known_scale_and_shift() -> None:
    gt = torch.rand(2, 16, 16, dtype=torch.float64) * 10 + 1
    pred = torch.stack([(gt[0] - 2.0) / 3.0, (gt[1] + 5.0) / 0.5])
    valid = torch.rand(2, 16, 16) > 0.3
    pred_bad = pred.masked_fill(~valid, 1e4)  # garbage at invalid pixels must not bias the fit
    scale, shift = least_squares_scale_shift(pred_bad, gt, valid)
    torch.testing.assert_close(scale, torch.tensor([3.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(shift, torch.tensor([2.0, -5.0], dtype=torch.float64))
    torch.testing.assert_close(apply_scale_shift(pred, scale, shift), gt)

    rel = depth_metrics(pred_bad, gt, valid, align=True)
    assert rel["abs_rel"].item() < 1e-9 and rel["rmse"].item() < 1e-9
    assert rel["delta1"].item() == 1.0
    metric = depth_metrics(pred_bad, gt, valid, align=False)
    assert metric["rmse"].item() > 1.0 and metric["delta1"].item() < 0.5


def test_alignment_matches_numpy_least_squares() -> None:
    gt = torch.rand(1, 12, 12, dtype=torch.float64) * 4
    pred = torch.rand(1, 12, 12, dtype=torch.float64)
    valid = torch.rand(1, 12, 12) > 0.2
    scale, shift = least_squares_scale_shift(pred, gt, valid)
    p, g = pred[0][valid[0]].numpy(), gt[0][valid[0]].numpy()
    s_ref, t_ref = np.polyfit(p, g, 1)
    assert scale.item() == pytest.approx(s_ref, rel=1e-9)
    assert shift.item() == pytest.approx(t_ref, rel=1e-9)
    aligned = depth_metrics(pred, gt, valid, align=True)
    want = _np_metrics(s_ref * pred.numpy() + t_ref, gt.numpy(), valid.numpy())
    for key, value in want.items():
        assert aligned[key].item() == pytest.approx(value, rel=1e-7), key


def test_degenerate_alignment() -> None:
    gt = torch.rand(2, 4, 4) + 1
    pred = torch.full((2, 4, 4), 7.0)
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[1] = False
    scale, shift = least_squares_scale_shift(pred, gt, valid)
    assert scale.tolist() == [0.0, 1.0]
    assert shift[0].item() == pytest.approx(gt[0].mean().item(), rel=1e-6)
    assert shift[1].item() == 0.0


@pytest.mark.parametrize("align", [False, True])
def test_metric_accumulates_like_one_big_batch(align: bool) -> None:
    gt = torch.rand(4, 10, 10) * 5 + 0.5
    pred = gt * 1.3 + torch.randn(4, 10, 10) * 0.3
    valid = torch.rand(4, 10, 10) > 0.2
    metric = DepthMetrics(align=align)
    metric.update(pred[:1], gt[:1], valid[:1])
    metric.update(pred[1:], gt[1:], valid[1:])
    got = metric.compute()
    want = depth_metrics(pred, gt, valid, align=align)
    for key in DEPTH_METRIC_NAMES:
        torch.testing.assert_close(got[key], want[key])

    per_image = DepthMetrics(align=align, reduction="image")
    for b in range(4):
        per_image.update(pred[b : b + 1], gt[b : b + 1], valid[b : b + 1])
    got_img = per_image.compute()
    singles = [depth_metrics(pred[b], gt[b], valid[b], align=align) for b in range(4)]
    for key in DEPTH_METRIC_NAMES:
        mean = torch.stack([s[key] for s in singles]).mean()
        torch.testing.assert_close(got_img[key], mean)
        torch.testing.assert_close(depth_metrics(pred, gt, valid, align=align, reduction="image")[key], mean)


def test_state_sums_merge_like_distributed_reduction() -> None:
    gt = torch.rand(4, 8, 8) * 3 + 0.1
    pred = gt + torch.randn(4, 8, 8) * 0.2
    valid = torch.rand(4, 8, 8) > 0.1
    for reduction in ("pixel", "image"):
        rank0, rank1, whole = (DepthMetrics(align=True, reduction=reduction) for _ in range(3))
        rank0.update(pred[:2], gt[:2], valid[:2])
        rank1.update(pred[2:], gt[2:], valid[2:])
        whole.update(pred, gt, valid)
        rank0.merge_state(rank1)  # adds the states with their dist_reduce_fx ("sum")
        merged = rank0.compute()
        expected = whole.compute()
        for key in DEPTH_METRIC_NAMES:
            torch.testing.assert_close(merged[key], expected[key])


def test_no_valid_pixels_gives_nan() -> None:
    metric = DepthMetrics()
    metric.update(torch.rand(1, 4, 4), torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))
    assert all(torch.isnan(v) for v in metric.compute().values())
    with pytest.raises(ValueError, match="differ in shape"):
        depth_metrics(torch.rand(1, 4, 4), torch.rand(1, 4, 5))
