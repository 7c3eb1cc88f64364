"""Sliding-window inference: window placement, coverage, averaging, batching and error handling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rsvit.models.sliding_window import (
    sliding_window_inference,
    sliding_windows,
    window_counts,
    window_starts,
)


def _pointwise_model(in_channels: int = 3, out_channels: int = 4) -> nn.Module:
    """Per-pixel MLP: strictly translation-equivariant, so windowing must not change its output."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 1), nn.GELU(), nn.Conv2d(8, out_channels, 1)).eval()


class _WindowDependent(nn.Module):
    """Output depends on where a pixel sits inside its window, so overlapping windows disagree."""

    def __init__(self, in_channels: int = 3, out_channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        h, w = x.shape[-2:]
        ramp = torch.linspace(0, 1, h)[:, None] + torch.linspace(-1, 0, w)[None, :]
        return self.conv(x) * (1 + ramp) + x.mean(dim=(1, 2, 3), keepdim=True)


def _reference_slide(
    fn, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int], out_channels: int
):
    """Straightforward one-window-at-a-time version of the official slide mode, written independently."""
    _, _, h_img, w_img = image.shape
    h_grids = max(h_img - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    w_grids = max(w_img - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    preds = image.new_zeros((image.shape[0], out_channels, h_img, w_img))
    count = image.new_zeros((image.shape[0], 1, h_img, w_img))
    for hi in range(h_grids):
        for wi in range(w_grids):
            y2 = min(hi * stride[0] + crop[0], h_img)
            x2 = min(wi * stride[1] + crop[1], w_img)
            y1, x1 = max(y2 - crop[0], 0), max(x2 - crop[1], 0)
            out = fn(image[:, :, y1:y2, x1:x2])
            preds += F.pad(out, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


@pytest.mark.parametrize(
    ("size", "crop", "stride", "expected"),
    [
        (160, 128, 96, [0, 32]),  # last window shifted back to end at the border
        (224, 128, 96, [0, 96]),
        (512, 512, 384, [0]),
        (1000, 512, 384, [0, 384, 488]),
        (100, 128, 96, [0]),  # smaller than the crop: one (clamped) window
        (10, 4, 4, [0, 4, 6]),
        (12, 4, 4, [0, 4, 8]),
    ],
)
def test_window_starts(size: int, crop: int, stride: int, expected: list[int]) -> None:
    assert window_starts(size, crop, stride) == expected


def test_windows_and_counts_of_the_fixture_setting() -> None:
    windows = sliding_windows((160, 224), 128, 96)
    assert windows == [(0, 128, 0, 128), (0, 128, 96, 224), (32, 160, 0, 128), (32, 160, 96, 224)]
    counts = window_counts((160, 224), 128, (96, 96))
    assert counts.shape == (160, 224)
    assert counts.sum() == 4 * 128 * 128
    assert counts[0, 0] == 1 and counts[-1, -1] == 1
    assert counts[32:128, 96:128].eq(4).all()
    assert counts[:32, 96:128].eq(2).all() and counts[32:128, :96].eq(2).all()


def test_clamped_windows_when_image_smaller_than_crop() -> None:
    assert sliding_windows((50, 300), (64, 64), (48, 48)) == [
        (0, 50, 0, 64),
        (0, 50, 48, 112),
        (0, 50, 96, 160),
        (0, 50, 144, 208),
        (0, 50, 192, 256),
        (0, 50, 236, 300),
    ]
    assert window_counts((50, 300), 64, 48).min() >= 1


@pytest.mark.parametrize(("height", "width"), [(77, 131), (64, 64), (33, 100), (20, 25)])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_pointwise_model_slide_equals_whole(height: int, width: int, batch_size: int) -> None:
    model = _pointwise_model()
    image = torch.randn(2, 3, height, width)
    with torch.no_grad():
        whole = model(image)
        slide = sliding_window_inference(model, image, (32, 40), (20, 27), 4, batch_size=batch_size)
    torch.testing.assert_close(slide, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(160, 224), (77, 131), (40, 200)])
def test_matches_reference_loop_with_overlapping_disagreeing_windows(height: int, width: int) -> None:
    model = _WindowDependent().eval()
    image = torch.randn(2, 3, height, width)
    with torch.no_grad():
        expected = _reference_slide(model, image, (64, 48), (40, 40), 4)
        got = sliding_window_inference(model, image, (64, 48), (40, 40), 4, batch_size=5)
        single = torch.cat([sliding_window_inference(model, im[None], (64, 48), 40, 4) for im in image])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(single, expected, atol=1e-6, rtol=0)
    # Overlaps really disagree here, so averaging logits is not the same as averaging probabilities.
    probs_of_mean = got.softmax(1)
    assert not torch.allclose(
        probs_of_mean,
        _reference_slide(lambda x: model(x).softmax(1), image, (64, 48), (40, 40), 4),
        atol=1e-3,
    )


def test_batching_of_windows() -> None:
    model = _WindowDependent().eval()
    image = torch.randn(3, 3, 100, 100)
    with torch.no_grad():
        out = sliding_window_inference(model, image, 64, 32, 4, batch_size=4)
    n_windows = len(sliding_windows((100, 100), 64, 32))
    assert n_windows == 9  # starts 0, 32, 36 on each axis
    sizes = [c[0] for c in model.calls]
    assert sum(sizes) == n_windows * 3 and max(sizes) == 4
    assert all(c[1:] == (3, 64, 64) for c in model.calls)
    assert out.shape == (3, 4, 100, 100)


def test_image_smaller_than_crop_runs_once_without_padding() -> None:
    model = _WindowDependent().eval()
    image = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        out = sliding_window_inference(model, image, 64, 48, 4)
        whole = model(image)
    assert model.calls == [(1, 3, 40, 50), (1, 3, 40, 50)]
    torch.testing.assert_close(out, whole, atol=1e-6, rtol=0)


def test_pad_to_crop() -> None:
    model = _WindowDependent().eval()
    image = torch.randn(1, 3, 40, 100)
    with torch.no_grad():
        out = sliding_window_inference(model, image, 64, 48, 4, pad_to_crop=True)
        padded = F.pad(image, (0, 0, 0, 24))
        expected = _reference_slide(model, padded, (64, 64), (48, 48), 4)[..., :40, :]
    assert out.shape == (1, 4, 40, 100)
    assert {c[-2:] for c in model.calls} == {(64, 64)}
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_bad_arguments() -> None:
    model = _pointwise_model()
    image = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="uncovered"):
        sliding_window_inference(model, image, 32, 33, 4)
    with pytest.raises(ValueError, match="crop_size must be positive"):
        sliding_window_inference(model, image, (0, 32), 16, 4)
    with pytest.raises(ValueError, match="pair"):
        sliding_window_inference(model, image, (32, 32, 32), 16, 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        sliding_window_inference(model, image[0], 32, 16, 4)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_inference(model, image, 32, 16, 4, batch_size=0)
    with pytest.raises(ValueError, match="expected"):
        sliding_window_inference(model, image, 32, 16, 5)
    with pytest.raises(ValueError, match="expected"):
        sliding_window_inference(lambda x: model(x)[..., ::2, ::2], image, 32, 16, 4)


def test_low_precision_outputs_are_accumulated_in_float32() -> None:
    model = _pointwise_model()
    image = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        out = sliding_window_inference(lambda x: model(x).bfloat16(), image, 32, 8, 4)
        expected = model(image).bfloat16().float()
    assert out.dtype == torch.float32
    # Windows may round a pixel to neighbouring bfloat16 values; the average stays within that spacing.
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=0)
