"""Image + label-mask datasets turned into promptable samples in Segment Anything's input frame.

Each image is resized so that its long side equals the model input ``img_size`` (Pillow bilinear on
uint8, as :class:`~rsvit.models.promptable.transforms.ResizeLongestSide` does at inference) and
zero-padded at the right and bottom to ``img_size x img_size``; the label mask follows with nearest
resampling and is padded with the ignore index. Targets and prompts are then drawn from the resized
labels (:class:`~rsvit.data.promptable.prompts_from_masks.PromptSampler`), so they live in the same
frame as the model's input and output.

Sample: ``image`` float32 ``(C, S, S)`` in 0-255 (padding 0; the model normalises and re-zeroes it),
``size`` ``(h, w)`` of the resized image, ``labels`` int64 ``(S, S)``, ``path``, and the prompts
(``masks``, ``classes``, ``boxes``, ``noisy_boxes``, ``point_coords``, ``point_labels``). Batches keep
the per-image prompt tensors in lists (:func:`promptable_collate`), since images hold different numbers
of targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rsvit.data.io import to_unit_range
from rsvit.data.promptable.prompts_from_masks import PromptSampler
from rsvit.data.segmentation.datasets import SegmentationDataset
from rsvit.models.promptable.transforms import ResizeLongestSide

__all__ = ["PROMPT_KEYS", "PromptableDataset", "promptable_collate", "to_uint8_hwc"]

PROMPT_KEYS = ("masks", "classes", "boxes", "noisy_boxes", "point_coords", "point_labels")


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` imagery of any dtype -> ``(H, W, C)`` uint8 (integers scaled by their dtype's range)."""
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image.transpose(1, 2, 0))
    scaled = np.clip(to_unit_range(image), 0.0, 1.0) * 255.0 + 0.5
    return np.ascontiguousarray(scaled.astype(np.uint8).transpose(1, 2, 0))


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    resized = Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(np.int64)


class PromptableDataset(Dataset):
    """Promptable samples from a :class:`~rsvit.data.segmentation.SegmentationDataset` (module docstring).

    Args:
        base: the image + mask dataset (its reading and ignore rules are used, not its transform).
        img_size: model input side ``S``.
        sampler: how targets and prompts are drawn.
        seed: with ``train=False`` every image gets the generator ``(seed, index)``, so evaluations see
            the same prompts every time (before and after fine-tuning alike). With ``train=True`` prompts
            are drawn afresh from torch's generator (seeded by ``seed_everything`` and the loader).
        train: draw new prompts each time and apply the flips.
        hflip, vflip: probabilities of mirroring a training sample.
    """

    def __init__(
        self,
        base: SegmentationDataset,
        img_size: int,
        sampler: PromptSampler,
        seed: int = 0,
        train: bool = False,
        hflip: float = 0.0,
        vflip: float = 0.0,
    ) -> None:
        self.base = base
        self.img_size = int(img_size)
        self.resize = ResizeLongestSide(self.img_size)
        self.sampler = sampler
        self.seed = int(seed)
        self.train = train
        self.hflip = float(hflip)
        self.vflip = float(vflip)

    def __len__(self) -> int:
        return len(self.base)

    def _generator(self, index: int) -> np.random.Generator:
        if self.train:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng((self.seed, index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.base.records[index]
        if record.mask is None:
            raise ValueError(
                f"{record.image} has no mask; promptable fine-tuning needs a label mask per image"
            )
        image = self.base.read_image(record.image)
        labels = self.base.read_labels(record.mask)
        if labels.shape != image.shape[-2:]:
            raise ValueError(
                f"mask {record.mask} is {labels.shape[1]}x{labels.shape[0]} (WxH) but image {record.image} "
                f"is {image.shape[2]}x{image.shape[1]}; masks must match their image pixel for pixel"
            )
        rng = self._generator(index)
        if self.train and rng.random() < self.hflip:
            image, labels = image[..., ::-1], labels[:, ::-1]
        if self.train and rng.random() < self.vflip:
            image, labels = image[..., ::-1, :], labels[::-1, :]
        resized = self.resize.apply_image(to_uint8_hwc(np.ascontiguousarray(image)))
        h, w = resized.shape[:2]
        s = self.img_size
        canvas = np.zeros((s, s, resized.shape[2]), dtype=np.float32)
        canvas[:h, :w] = resized
        frame = np.full((s, s), self.base.ignore_index, dtype=np.int64)
        frame[:h, :w] = _resize_labels(np.ascontiguousarray(labels), (h, w))
        prompts = self.sampler(frame, rng)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(canvas.transpose(2, 0, 1).copy()),
            "size": torch.tensor([h, w], dtype=torch.int64),
            "labels": torch.from_numpy(frame),
            "path": str(record.image),
        }
        for key in PROMPT_KEYS:
            sample[key] = torch.from_numpy(np.ascontiguousarray(getattr(prompts, key)))
        return sample


def promptable_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images, sizes and labels; keep each image's prompts as one list entry per image."""
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "size": torch.stack([s["size"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "path": [s["path"] for s in samples],
    }
    for key in PROMPT_KEYS:
        batch[key] = [s[key] for s in samples]
    return batch
