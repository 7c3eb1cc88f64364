"""Joint augmentation of bitemporal samples (date A, date B and the change mask)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["ChangeTransform"]


class ChangeTransform:
    """Joint augmentation of a change sample: one geometry for A, B and the mask, photometry per date.

    Geometry (random crop to ``crop_size``, horizontal/vertical flips, rot90) must be identical for
    both dates and the label or the "change" the model learns is the augmentation itself. Brightness,
    contrast and gamma are drawn separately for each date (``same_photometry=False``), mimicking
    different acquisition conditions, and never touch the mask. ``mean``/``std`` normalise last.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int] | None = None,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: bool = True,
        brightness: float = 0.0,
        contrast: float = 0.0,
        gamma: float = 0.0,
        same_photometry: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
        for name, p in (("hflip", hflip), ("vflip", vflip)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        for name, v in (("brightness", brightness), ("contrast", contrast), ("gamma", gamma)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std or neither")
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma
        self.same_photometry = same_photometry
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.generator = generator

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.generator))

    def _photometry(self) -> tuple[float, float, float]:
        def factor(amount: float) -> float:
            return 1.0 + (2 * self._rand() - 1) * amount if amount else 1.0

        return factor(self.brightness), factor(self.contrast), factor(self.gamma)

    @staticmethod
    def _apply_photometry(image: torch.Tensor, params: tuple[float, float, float]) -> torch.Tensor:
        brightness, contrast, gamma = params
        if (brightness, contrast, gamma) == (1.0, 1.0, 1.0):
            return image
        mean = image.mean(dim=(-2, -1), keepdim=True)
        out = ((image * brightness - mean * brightness) * contrast + mean * brightness).clamp(0, 1)
        return out.pow(gamma)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        keys = [k for k in ("image_a", "image_b", "mask") if k in sample]
        tensors = {k: torch.as_tensor(sample[k]) for k in keys}
        height, width = tensors["image_a"].shape[-2:]
        if self.crop_size is not None:
            ch, cw = self.crop_size
            if ch > height or cw > width:
                raise ValueError(f"crop {cw}x{ch} (WxH) is larger than the sample {width}x{height}")
            y, x = self._randint(height - ch + 1), self._randint(width - cw + 1)
            tensors = {k: t[..., y : y + ch, x : x + cw] for k, t in tensors.items()}
        if self._rand() < self.hflip:
            tensors = {k: t.flip(-1) for k, t in tensors.items()}
        if self._rand() < self.vflip:
            tensors = {k: t.flip(-2) for k, t in tensors.items()}
        if self.rot90:
            turns = self._randint(4)
            tensors = {k: torch.rot90(t, turns, dims=(-2, -1)) for k, t in tensors.items()}
        params_a = self._photometry()
        params_b = params_a if self.same_photometry else self._photometry()
        tensors["image_a"] = self._apply_photometry(tensors["image_a"].float(), params_a)
        tensors["image_b"] = self._apply_photometry(tensors["image_b"].float(), params_b)
        if self.mean is not None and self.std is not None:
            for k in ("image_a", "image_b"):
                tensors[k] = (tensors[k] - self.mean) / self.std
        out = dict(sample)
        out.update({k: t.contiguous() for k, t in tensors.items()})
        return out
