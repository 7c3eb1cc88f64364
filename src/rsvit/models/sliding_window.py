"""Sliding-window inference for any dense model, equal to the official mmsegmentation "slide" test mode.

Window placement (per axis, image size ``L``, crop ``c``, stride ``s``):

* ``n = ceil(max(L - c, 0) / s) + 1`` windows start at ``0, s, 2s, ...``;
* a window that would run past the border is shifted back so that it ends at the border (the last
  window therefore overlaps its neighbour more than the others do);
* when the image is smaller than the crop, the single window is the whole image: the model runs on the
  smaller input, nothing is padded (the official behaviour). Pass ``pad_to_crop=True`` for models that
  need a fixed input size: the image is then zero-padded at the bottom/right to the crop size and the
  output is cropped back.

Outputs of overlapping windows are **averaged as raw logits** (sum, then divide by the per-pixel window
count) before any softmax/argmax, like the official code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from rsvit.ops.windows import pair_of_ints as _pair
from rsvit.ops.windows import sliding_windows, window_starts

# The window rule itself lives in rsvit.ops.windows; these names stay importable from here.
__all__ = ["sliding_window_inference", "sliding_windows", "window_counts", "window_starts"]

DenseFn = Callable[[torch.Tensor], torch.Tensor]


def window_counts(
    image_size: Sequence[int], crop_size: int | Sequence[int], stride: int | Sequence[int]
) -> torch.Tensor:
    """How many windows cover each pixel, as an ``(H, W)`` int64 tensor (every entry >= 1)."""
    counts = torch.zeros(tuple(int(v) for v in image_size), dtype=torch.int64)
    for y0, y1, x0, x1 in sliding_windows(image_size, crop_size, stride):
        counts[y0:y1, x0:x1] += 1
    return counts


def sliding_window_inference(
    fn: DenseFn,
    image: torch.Tensor,
    crop_size: int | Sequence[int],
    stride: int | Sequence[int],
    out_channels: int,
    batch_size: int = 4,
    pad_to_crop: bool = False,
) -> torch.Tensor:
    """Run ``fn`` on overlapping windows of ``image`` and average the outputs into one dense map.

    Args:
        fn: maps a ``(N, C, h, w)`` batch of windows to ``(N, out_channels, h, w)`` dense outputs (logits at
            window resolution, e.g. :meth:`rsvit.models.segmentor.Segmentor.forward`).
        image: ``(B, C, H, W)`` input.
        crop_size: window size, int or ``(h, w)``.
        stride: step between window starts, int or ``(h, w)``; must not exceed the crop.
        out_channels: channels of ``fn``'s output (number of classes for segmentation).
        batch_size: how many windows go through ``fn`` at once (windows of all images are pooled); the
            result does not depend on it beyond float rounding.
        pad_to_crop: zero-pad images smaller than the crop up to the crop size instead of running ``fn``
            on the smaller image (see the module docstring).

    Returns:
        ``(B, out_channels, H, W)`` tensor: per-pixel mean of the window outputs (logits, not
        probabilities), in float32 (float64 if ``fn`` returns float64).
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}")
    crop_h, crop_w = _pair(crop_size, "crop_size")
    stride_h, stride_w = _pair(stride, "stride")
    height, width = image.shape[-2:]

    if pad_to_crop and (height < crop_h or width < crop_w):
        padded = F.pad(image, (0, max(crop_w - width, 0), 0, max(crop_h - height, 0)))
        out = sliding_window_inference(fn, padded, crop_size, stride, out_channels, batch_size)
        return out[..., :height, :width]

    windows = sliding_windows((height, width), (crop_h, crop_w), (stride_h, stride_w))
    n_images = image.shape[0]
    # Every window has the same (clamped) size, so windows of all images can share a batch.
    jobs = [(w, b) for w in windows for b in range(n_images)]
    total: torch.Tensor | None = None
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        crops = torch.stack([image[b, :, y0:y1, x0:x1] for (y0, y1, x0, x1), b in chunk])
        logits = fn(crops)
        expected = (len(chunk), out_channels, *crops.shape[-2:])
        if tuple(logits.shape) != expected:
            raise ValueError(
                f"the model returned shape {tuple(logits.shape)} for windows of shape {tuple(crops.shape)}, "
                f"expected {expected} (out_channels logits at window resolution)"
            )
        if total is None:
            # Accumulate in at least float32 so that low-precision (autocast) logits average cleanly.
            dtype = torch.promote_types(logits.dtype, torch.float32)
            total = logits.new_zeros((n_images, out_channels, height, width), dtype=dtype)
        for ((y0, y1, x0, x1), b), logit in zip(chunk, logits, strict=True):
            total[b, :, y0:y1, x0:x1] += logit
    assert total is not None  # at least one window always exists
    counts = window_counts((height, width), (crop_h, crop_w), (stride_h, stride_w))
    return total / counts.to(device=total.device, dtype=total.dtype)
