"""Joint image + mask transforms for semantic segmentation.

:class:`SegmentationTransform` turns the ``(C, H, W)`` image array read from disk and its ``(H, W)``
class-index mask into the tensors a segmentor trains on. Training applies, in the order of the official
RSP/mmseg pipelines:

1. random rescale (``resize_scale`` and/or ``ratio_range``; image bilinear, mask nearest);
2. random crop to ``crop_size`` (``cat_max_ratio`` < 1 retries up to 10 times to avoid crops dominated
   by one class, ignoring the ignore index);
3. horizontal / vertical flips and rotations by multiples of 90 degrees;
4. photometric distortion of the image only (brightness, contrast, saturation, hue);
5. normalisation: integers scaled to [0, 1] by their dtype's range, then ``(x - mean) / std``;
6. padding at the bottom/right to the crop size: the image with 0 (after normalisation, as the official
   pipelines do), the mask with the ignore index, so small images never change the loss.

Evaluation only normalises (whole images, any size). Every geometric step touches image and mask
together, so they stay aligned pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rsvit.data.io import to_unit_range

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SegmentationTransform", "photometric_distortion"]

# The official normalisation (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) in [0, 1] units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        out = (value, value)
    else:
        out = tuple(int(v) for v in value)
        if len(out) != 2:
            raise ValueError(f"crop_size must be an int or (height, width), got {value!r}")
    if min(out) < 1:
        raise ValueError(f"crop_size must be positive, got {value!r}")
    return out  # type: ignore[return-value]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _chance(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


def photometric_distortion(
    image: Tensor,
    brightness: float = 32 / 255,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue: float = 18 / 360,
) -> Tensor:
    """Random brightness, contrast, saturation and hue changes of a ``(C, H, W)`` image in [0, 1].

    Each change is applied with probability 0.5, contrast either first or last, like mmseg's
    ``PhotoMetricDistortion`` (whose deltas 32 and 18 degrees are on a 0-255 / 0-180 scale). Saturation
    and hue need three bands and are skipped for other band counts.
    """
    from torchvision.transforms.v2 import functional as TF

    out = image
    if _chance(0.5):
        out = out + _uniform(-brightness, brightness)
    contrast_first = _chance(0.5)
    if contrast_first and _chance(0.5):
        out = out * _uniform(*contrast)
    out = out.clamp(0.0, 1.0)
    if out.shape[0] == 3:
        if _chance(0.5):
            out = TF.adjust_saturation(out, _uniform(*saturation))
        if _chance(0.5):
            out = TF.adjust_hue(out, _uniform(-hue, hue))
    if not contrast_first and _chance(0.5):
        out = (out * _uniform(*contrast)).clamp(0.0, 1.0)
    return out


class SegmentationTransform:
    """Joint augmentation + normalisation (see the module docstring).

    Args:
        train: augment (crop, flips, ...) or only normalise.
        crop_size: training crop, int or ``(h, w)``; ``None`` keeps whole images (no crop, no padding).
        mean, std: per band, in [0, 1] units (after integer scaling).
        ignore_index: mask value of padded pixels.
        resize_scale: rescale so that the long side becomes ``resize_scale`` (times the random ratio).
        ratio_range: random rescale factor range, e.g. ``(0.5, 2.0)``.
        cat_max_ratio: largest share one class may take in a crop (1 disables the retries).
        hflip, vflip: flip probabilities.
        rot90: probability of a rotation by 90, 180 or 270 degrees (180 only for non-square crops).
        photometric: apply :func:`photometric_distortion` to the image.
    """

    def __init__(
        self,
        train: bool,
        crop_size: int | Sequence[int] | None = 512,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
        resize_scale: int | None = None,
        ratio_range: Sequence[float] | None = None,
        cat_max_ratio: float = 1.0,
        hflip: float = 0.5,
        vflip: float = 0.0,
        rot90: float = 0.0,
        photometric: bool = False,
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values, std {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        if ratio_range is not None and (len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]):
            raise ValueError(f"ratio_range must be (low, high) with 0 < low <= high, got {ratio_range!r}")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"cat_max_ratio must be in (0, 1], got {cat_max_ratio}")
        self.train = train
        self.crop_size = _pair(crop_size)
        self.mean = torch.tensor([float(m) for m in mean]).view(-1, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(-1, 1, 1)
        self.ignore_index = int(ignore_index)
        self.resize_scale = resize_scale
        self.ratio_range = tuple(float(r) for r in ratio_range) if ratio_range is not None else None
        self.cat_max_ratio = float(cat_max_ratio)
        self.hflip, self.vflip, self.rot90 = float(hflip), float(vflip), float(rot90)
        self.photometric = photometric

    # -- steps -------------------------------------------------------------------------------------

    def _rescale(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.resize_scale is None and self.ratio_range is None:
            return image, mask
        factor = _uniform(*self.ratio_range) if self.ratio_range is not None else 1.0
        if self.resize_scale is not None:
            factor *= self.resize_scale / max(image.shape[-2:])
        size = [max(1, int(s * factor + 0.5)) for s in image.shape[-2:]]
        if size == list(image.shape[-2:]):
            return image, mask
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if mask is not None:
            mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return image, mask

    def _crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        assert self.crop_size is not None
        ch, cw = min(self.crop_size[0], height), min(self.crop_size[1], width)
        y0 = int(torch.randint(0, height - ch + 1, ()))
        x0 = int(torch.randint(0, width - cw + 1, ()))
        return y0, y0 + ch, x0, x0 + cw

    def _random_crop(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        height, width = image.shape[-2:]
        box = self._crop_box(height, width)
        if mask is not None and self.cat_max_ratio < 1.0:
            for _ in range(10):
                y0, y1, x0, x1 = box
                labels = mask[y0:y1, x0:x1]
                counts = torch.bincount(labels[labels != self.ignore_index].flatten())
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = self._crop_box(height, width)
        y0, y1, x0, x1 = box
        return image[:, y0:y1, x0:x1], None if mask is None else mask[y0:y1, x0:x1]

    def _geometric(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        ops: list[Any] = []
        if _chance(self.hflip):
            ops.append(lambda t: t.flip(-1))
        if _chance(self.vflip):
            ops.append(lambda t: t.flip(-2))
        if _chance(self.rot90):
            square = image.shape[-1] == image.shape[-2]
            k = int(torch.randint(1, 4, ())) if square else 2
            ops.append(lambda t: torch.rot90(t, k, dims=(-2, -1)))
        for op in ops:
            image = op(image)
            mask = None if mask is None else op(mask)
        return image, mask

    def _pad(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        assert self.crop_size is not None
        pad_h = max(self.crop_size[0] - image.shape[-2], 0)
        pad_w = max(self.crop_size[1] - image.shape[-1], 0)
        if not (pad_h or pad_w):
            return image, mask
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        if mask is not None:
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return image, mask

    # -- call ----------------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None) -> dict[str, Any]:
        """``image`` ``(C, H, W)`` (any dtype) and ``mask`` ``(H, W)`` class indices -> tensors.

        Returns ``{"image": float32 (C, h, w), "mask": int64 (h, w)}`` (``"mask"`` only when given).
        """
        array = image.numpy() if isinstance(image, Tensor) else np.asarray(image)
        if array.ndim != 3:
            raise ValueError(f"image must be (C, H, W), got shape {array.shape}")
        if array.shape[0] != self.mean.shape[0]:
            raise ValueError(
                f"image has {array.shape[0]} bands but mean/std have {self.mean.shape[0]} values"
            )
        img = torch.from_numpy(np.ascontiguousarray(to_unit_range(array)))
        msk: Tensor | None = None
        if mask is not None:
            msk = torch.as_tensor(np.asarray(mask)).long()
            if tuple(msk.shape) != tuple(img.shape[-2:]):
                raise ValueError(
                    f"mask shape {tuple(msk.shape)} differs from image size {tuple(img.shape[-2:])}"
                )
        if self.train:
            img, msk = self._rescale(img, msk)
            if self.crop_size is not None:
                img, msk = self._random_crop(img, msk)
            img, msk = self._geometric(img, msk)
            if self.photometric:
                img = photometric_distortion(img)
        img = (img - self.mean) / self.std
        if self.train and self.crop_size is not None:
            img, msk = self._pad(img, msk)
        out: dict[str, Any] = {"image": img.contiguous().float()}
        if msk is not None:
            out["mask"] = msk.contiguous()
        return out

    def denormalize(self, image: Tensor) -> Tensor:
        """Undo the normalisation: ``(C, H, W)`` or ``(B, C, H, W)`` back to [0, 1] units."""
        mean, std = self.mean.to(image.device), self.std.to(image.device)
        return image * std + mean

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return (
            f"{type(self).__name__}({mode}, crop={self.crop_size}, scale={self.resize_scale}, "
            f"ratio={self.ratio_range}, cat_max_ratio={self.cat_max_ratio}, hflip={self.hflip}, "
            f"vflip={self.vflip}, rot90={self.rot90}, photometric={self.photometric})"
        )
