"""DPT depth / height losses: invariances, trimming, masking and values against NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvit.models.dpt.losses import (
    BerHuLoss,
    MaskedL1Loss,
    ScaleShiftInvariantLoss,
    berhu_loss,
    gradient_matching_loss,
    masked_l1_loss,
    robust_normalize,
    scale_shift_invariant_loss,
)


def _np_align(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, alignment: str) -> np.ndarray:
    """Aligned residual map (0 outside valid), computed independently with NumPy."""
    p, t = pred.astype(np.float64), target.astype(np.float64)
    if alignment == "lstsq":
        a = np.stack([p[valid], np.ones(valid.sum())], axis=1)
        (s, b), *_ = np.linalg.lstsq(a, t[valid], rcond=None)
        res = s * p + b - t
    else:

        def norm(x: np.ndarray) -> np.ndarray:
            v = np.sort(x[valid])
            med = v[(len(v) - 1) // 2]
            return (x - med) / (max(np.abs(x[valid] - med).mean(), 1e-6))

        res = norm(p) - norm(t)
    return np.where(valid, res, 0.0)


def _np_ssi(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, trim: float, alignment: str) -> float:
    res = _np_align(pred, target, valid, alignment)[valid]
    res = res**2 if alignment == "lstsq" else np.abs(res)
    m = valid.sum()
    kept = np.sort(res)[: int(np.floor(m * (1 - trim)))]
    return kept.sum() / (2 * m)


def _np_grad(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, alignment: str) -> float:
    res = _np_align(pred, target, valid, alignment)
    total = 0.0
    for k in range(4):
        r, v = res[:: 2**k, :: 2**k], valid[:: 2**k, :: 2**k]
        for i in range(r.shape[0]):
            for j in range(r.shape[1]):
                if j + 1 < r.shape[1] and v[i, j] and v[i, j + 1]:
                    total += abs(r[i, j + 1] - r[i, j])
                if i + 1 < r.shape[0] and v[i, j] and v[i + 1, j]:
                    total += abs(r[i + 1, j] - r[i, j])
    return total / valid.sum()


def _sample(batch: int = 2, size: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = torch.rand(batch, size, size, dtype=torch.float64) * 5 + 1
    pred = torch.rand(batch, size, size, dtype=torch.float64)
    mask = torch.rand(batch, size, size) > 0.2
    return pred, target, mask


@pytest.mark.parametrize("alignment", ["lstsq", "robust"])
def test_ssi_and_gradient_loss_are_zero_for_affine_maps(alignment: str) -> None:
    _, target, mask = _sample()
    pred = 0.37 * target + 4.2  # positive scale: the robust normalisation is sign-sensitive
    assert scale_shift_invariant_loss(pred, target, mask, alignment=alignment) < 1e-12
    assert scale_shift_invariant_loss(pred, target, mask, trim=0.2, alignment=alignment) < 1e-12
    assert gradient_matching_loss(pred, target, mask, alignment=alignment) < 1e-10
    # ...and clearly positive for an unrelated prediction.
    noise = torch.rand_like(target)
    assert scale_shift_invariant_loss(noise, target, mask, alignment=alignment) > 1e-2
    assert gradient_matching_loss(noise, target, mask, alignment=alignment) > 1e-2


@pytest.mark.parametrize("alignment", ["lstsq", "robust"])
def test_losses_are_invariant_to_prediction_scale_and_shift(alignment: str) -> None:
    pred, target, mask = _sample()
    for fn in (scale_shift_invariant_loss, gradient_matching_loss):
        base = fn(pred, target, mask, alignment=alignment)
        moved = fn(13.0 * pred - 7.5, target, mask, alignment=alignment)
        torch.testing.assert_close(moved, base, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("alignment", ["lstsq", "robust"])
@pytest.mark.parametrize("trim", [0.0, 0.2])
def test_ssi_matches_numpy_reference(alignment: str, trim: float) -> None:
    pred, target, mask = _sample(batch=3, size=16)
    got = scale_shift_invariant_loss(pred, target, mask, trim=trim, alignment=alignment)
    want = np.mean(
        [_np_ssi(pred[b].numpy(), target[b].numpy(), mask[b].numpy(), trim, alignment) for b in range(3)]
    )
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("alignment", ["lstsq", "robust"])
def test_gradient_loss_matches_loop_reference(alignment: str) -> None:
    pred, target, mask = _sample(batch=2, size=19)  # odd size: subsampled levels keep the last row
    got = gradient_matching_loss(pred, target, mask, alignment=alignment)
    want = np.mean(
        [_np_grad(pred[b].numpy(), target[b].numpy(), mask[b].numpy(), alignment) for b in range(2)]
    )
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_trimming_drops_exactly_the_worst_residuals() -> None:
    # Ten pixels corrupted by +-1000 have by far the largest residuals (they also inflate the prediction's
    # mean absolute deviation, so clean pixels keep small residuals). The 20% trim must drop those ten plus
    # the next ten and divide the rest by 2M.
    target = torch.arange(100, dtype=torch.float64).reshape(1, 10, 10)
    pred = target.clone()
    worst = torch.tensor([3, 17, 29, 41, 55, 62, 73, 88, 91, 96])
    pred.view(-1)[worst] += torch.tensor([1e3, -1e3] * 5, dtype=torch.float64)
    mask = torch.ones_like(target, dtype=torch.bool)
    trimmed = scale_shift_invariant_loss(pred, target, mask, trim=0.2, alignment="robust")
    full = scale_shift_invariant_loss(pred, target, mask, trim=0.0, alignment="robust")
    ref = _np_align(pred[0].numpy(), target[0].numpy(), mask[0].numpy(), "robust")
    ordered = np.sort(np.abs(ref).ravel())
    assert trimmed.item() == pytest.approx(ordered[:80].sum() / 200, rel=1e-9)
    assert set(np.argsort(np.abs(ref).ravel())[-10:].tolist()) == set(worst.tolist())
    assert trimmed < full / 2


def test_masked_pixels_do_not_matter_and_give_finite_gradients() -> None:
    pred, target, mask = _sample()
    clean = {
        "ssi": scale_shift_invariant_loss(pred, target, mask, trim=0.2),
        "grad": gradient_matching_loss(pred, target, mask),
        "l1": masked_l1_loss(pred, target, mask),
        "berhu": berhu_loss(pred, target, mask),
    }
    target_bad = target.masked_fill(~mask, float("nan"))
    pred_bad = pred.masked_fill(~mask, 1e6).requires_grad_()
    dirty = {
        "ssi": scale_shift_invariant_loss(pred_bad, target_bad, mask, trim=0.2),
        "grad": gradient_matching_loss(pred_bad, target_bad, mask),
        "l1": masked_l1_loss(pred_bad, target_bad, mask),
        "berhu": berhu_loss(pred_bad, target_bad, mask),
    }
    for key, value in clean.items():
        torch.testing.assert_close(dirty[key], value)
    sum(dirty.values()).backward()
    assert torch.isfinite(pred_bad.grad).all()
    assert (pred_bad.grad[~mask] == 0).all()


def test_l1_and_berhu_by_hand() -> None:
    target = torch.zeros(1, 1, 5)
    pred = torch.tensor([[[0.1, -0.5, 1.0, 2.0, 9.0]]])
    mask = torch.tensor([[[True, True, True, True, False]]])
    assert masked_l1_loss(pred, target, mask).item() == pytest.approx((0.1 + 0.5 + 1 + 2) / 4)
    c = 0.2 * 2.0
    want = (0.1 + (0.25 + c * c) / (2 * c) + (1 + c * c) / (2 * c) + (4 + c * c) / (2 * c)) / 4
    assert berhu_loss(pred, target, mask).item() == pytest.approx(want, rel=1e-6)
    assert BerHuLoss()(pred, target, mask).item() == pytest.approx(want, rel=1e-6)
    assert MaskedL1Loss()(pred, target, mask).item() == pytest.approx(0.9)
    # berHu is continuous at c and reaches L1 below it.
    at_c = torch.tensor([[[c, 2.0]]])
    assert berhu_loss(at_c, torch.zeros(1, 1, 2)).item() == pytest.approx((c + (4 + c * c) / (2 * c)) / 2)


def test_empty_mask_gives_connected_zero() -> None:
    pred = torch.rand(2, 1, 8, 8, requires_grad=True)
    target = torch.rand(2, 1, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    for fn in (scale_shift_invariant_loss, gradient_matching_loss, masked_l1_loss, berhu_loss):
        loss = fn(pred, target, mask)
        assert loss.item() == 0.0
        loss.backward()
    # One empty image in a batch does not dilute the other's loss.
    mask[1] = True
    both = scale_shift_invariant_loss(pred, target, mask)
    alone = scale_shift_invariant_loss(pred[1:], target[1:], mask[1:])
    torch.testing.assert_close(both, alone)


def test_robust_normalize_has_zero_median_and_unit_mad() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0, 10.0, 100.0]]])
    valid = torch.tensor([[[True, True, True, True, False]]])
    out = robust_normalize(x, valid)
    # lower median of (1, 2, 3, 10) is 2; mean |x - 2| = (1 + 0 + 1 + 8) / 4 = 2.5
    torch.testing.assert_close(out, torch.tensor([[[-0.4, 0.0, 0.4, 3.2, 0.0]]]))


def test_combined_loss_fits_a_relative_prediction() -> None:
    target = torch.linspace(1, 5, 32 * 32).reshape(1, 1, 32, 32) + torch.rand(1, 1, 32, 32)
    mask = torch.rand(1, 1, 32, 32) > 0.1
    pred = torch.zeros(1, 1, 32, 32).uniform_(-1, 1).requires_grad_()
    criterion = ScaleShiftInvariantLoss()
    opt = torch.optim.Adam([pred], lr=0.05)
    first = criterion(pred, target, mask).item()
    for _ in range(120):
        opt.zero_grad()
        loss = criterion(pred, target, mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.15 * first
