"""Scene-classification transforms after the RSP recipe, built from timm's implementations.

``SceneTransform`` maps a ``(C, H, W)`` array as read from disk to a normalised tensor:

* 8-bit RGB goes through :func:`timm.data.create_transform` (RandomResizedCrop, flips, RandAugment,
  colour jitter, normalisation, random erasing), exactly the pipeline RSP trains with;
* any other band count or bit depth (multispectral GeoTIFF, 16-bit imagery) goes through the tensor
  equivalent: scaled to [0, 1] by its dtype, random resized crop, flips, normalisation and timm's
  random erasing. RandAugment and colour jitter are defined for RGB only and are not applied there.

Mixup/CutMix and label smoothing act on batches and live in the task (:func:`build_mixup`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_transform
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import InterpolationMode, v2

from rsvit.data.io import to_unit_range

__all__ = ["RSP_AUTO_AUGMENT", "SceneTransform", "build_mixup"]

RSP_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


class SceneTransform:
    """Training or evaluation transform of one image (see the module docstring).

    Args:
        train: random augmentation (True) or resize + centre crop (False).
        input_size: output height and width.
        mean, std: per-band normalisation in [0, 1] units (length = band count).
        scale, ratio: RandomResizedCrop area and aspect ranges.
        hflip, vflip: flip probabilities.
        auto_augment: timm auto-augment string (RGB only), ``None`` for none.
        color_jitter: colour jitter strength (RGB only; timm ignores it when auto_augment is set).
        re_prob, re_mode, re_count: random erasing.
        crop_pct: evaluation centre-crop fraction (RSP: 224 / 256 = 0.875).
        interpolation: ``"bicubic"`` (RSP) or ``"bilinear"``.
    """

    def __init__(
        self,
        train: bool,
        input_size: int = 224,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        vflip: float = 0.0,
        auto_augment: str | None = RSP_AUTO_AUGMENT,
        color_jitter: float = 0.4,
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        if interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
        self.train = train
        self.input_size = int(input_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.options: dict[str, Any] = {
            "scale": tuple(scale),
            "ratio": tuple(ratio),
            "hflip": hflip,
            "vflip": vflip,
            "auto_augment": auto_augment or None,
            "color_jitter": color_jitter,
            "re_prob": re_prob,
            "re_mode": re_mode,
            "re_count": re_count,
            "crop_pct": crop_pct,
            "interpolation": interpolation,
        }
        self._rgb = self._build_rgb() if len(self.mean) == 3 else None
        self._tensor = self._build_tensor()

    def _build_rgb(self) -> Any:
        o = self.options
        if self.train:
            return create_transform(
                self.input_size,
                is_training=True,
                scale=o["scale"],
                ratio=o["ratio"],
                hflip=o["hflip"],
                vflip=o["vflip"],
                color_jitter=o["color_jitter"],
                auto_augment=o["auto_augment"],
                interpolation=o["interpolation"],
                mean=self.mean,
                std=self.std,
                re_prob=o["re_prob"],
                re_mode=o["re_mode"],
                re_count=o["re_count"],
            )
        return create_transform(
            self.input_size,
            is_training=False,
            interpolation=o["interpolation"],
            mean=self.mean,
            std=self.std,
            crop_pct=o["crop_pct"],
        )

    def _build_tensor(self) -> v2.Compose:
        o = self.options
        interp = _INTERPOLATION[o["interpolation"]]
        steps: list[Any]
        if self.train:
            steps = [
                v2.RandomResizedCrop(
                    self.input_size, scale=o["scale"], ratio=o["ratio"], interpolation=interp
                )
            ]
            if o["hflip"] > 0:
                steps.append(v2.RandomHorizontalFlip(o["hflip"]))
            if o["vflip"] > 0:
                steps.append(v2.RandomVerticalFlip(o["vflip"]))
        else:
            resize = int(np.floor(self.input_size / o["crop_pct"]))
            steps = [v2.Resize(resize, interpolation=interp), v2.CenterCrop(self.input_size)]
        steps.append(v2.Normalize(self.mean, self.std))
        if self.train and o["re_prob"] > 0:
            steps.append(
                RandomErasing(o["re_prob"], mode=o["re_mode"], max_count=o["re_count"], device="cpu")
            )
        return v2.Compose(steps)

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        if array.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image, got shape {array.shape}")
        bands = array.shape[0]
        if bands != len(self.mean):
            raise ValueError(
                f"image has {bands} bands but mean/std are given for {len(self.mean)}; set mean and std "
                "per band"
            )
        if self._rgb is not None and array.dtype == np.uint8:
            from PIL import Image

            return self._rgb(Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0))))
        return self._tensor(torch.from_numpy(np.ascontiguousarray(to_unit_range(array))))

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return f"SceneTransform({kind}, size={self.input_size}, bands={len(self.mean)}, {self.options})"


def build_mixup(
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    mode: str = "batch",
    label_smoothing: float = 0.1,
) -> Mixup | None:
    """The timm Mixup/CutMix (with label smoothing of the mixed targets), or ``None`` when both are off."""
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or prob <= 0:
        return None
    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=prob,
        switch_prob=switch_prob,
        mode=mode,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
