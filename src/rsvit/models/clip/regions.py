"""Scoring image regions against a text query with CLIP: crops around masks, batched, query vs. negatives.

A region is a mask with its box. CLIP sees a square crop around it:

* **Crop rule** (:func:`square_box`). The square is centred on the mask's box, its side the longer box
  side grown by ``margin`` of it on each side (``side = ceil(max(w, h) * (1 + 2 * margin))``), so the
  region keeps its shape (CLIP's eval transform resizes the shorter side and centre-crops, which would cut
  an elongated region) and a little context. Parts of the square outside the image, and pixels the image
  marks invalid (nodata), take the fill colour.
* **Background rule** (:data:`BACKGROUNDS`). Outside the mask, ``"blur"`` (the default) replaces the
  pixels by a Gaussian blur of the crop (standard deviation 5% of the side): the region stays sharp while
  the context stays recognisable, which helps CLIP attend to the region; ``"grey"`` replaces them by the
  fill colour; ``"keep"`` leaves them. The fill colour is CLIP's normalisation mean (OpenAI's), i.e.
  zero after normalisation.

The text side is the zero-shot classifier of :mod:`rsvit.models.clip.zeroshot` over the query and a few
negative ("background") prompts, each wrapped in the template set. A region's ``probability`` is the
softmax over [query, negatives] of the scaled cosine similarities (scale 100 as in the papers' code, or
the checkpoint's own); its ``cosine`` is the cosine similarity with the query alone. Either can be
thresholded (:func:`select_regions`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rsvit.models.clip.loading import CLIP_PRESETS, NORMALISE_THEN_MEAN, LoadedClip
from rsvit.models.clip.templates import resolve_templates
from rsvit.models.clip.zeroshot import (
    PromptTooLongError,
    ZeroShotClassifier,
    cached_text_classifier,
)

__all__ = [
    "BACKGROUNDS",
    "CLIP_FILL",
    "DEFAULT_NEGATIVES",
    "SCORES",
    "RegionScorer",
    "RegionScores",
    "check_text",
    "region_crop",
    "select_regions",
    "square_box",
]

BACKGROUNDS = ("blur", "grey", "keep")
SCORES = ("probability", "cosine")
#: CLIP's (OpenAI) normalisation mean as 8-bit RGB: zero after the model's normalisation.
CLIP_FILL = (123, 117, 104)
#: Land-cover words that compete with the query in the softmax (a query equal to one of them drops it).
DEFAULT_NEGATIVES = ("background", "bare soil", "grass", "trees", "road", "water", "shadow")
BLUR_FRACTION = 0.05

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, maxima inclusive


def square_box(box: Sequence[int], margin: float = 0.1) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square crop around a box (see the module's crop rule)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {tuple(box)} is empty: x1 < x0 or y1 < y0")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    w, h = x1 - x0 + 1, y1 - y0 + 1
    side = math.ceil(max(w, h) * (1 + 2 * margin))
    left = x0 + (w - side) // 2
    top = y0 + (h - side) // 2
    return left, top, side


def _blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an ``(H, W, C)`` uint8 crop (reflected borders, kernel cut at 3 sigma)."""
    import torch.nn.functional as F

    radius = min(math.ceil(3 * sigma), min(crop.shape[:2]) - 1)
    if radius < 1:
        return crop.copy()
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    image = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[:, None]
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return image[:, 0].round().clamp(0, 255).to(torch.uint8).numpy().transpose(1, 2, 0)


def _shrink(crop: np.ndarray, region: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop (bicubic, as CLIP's transform) and region (nearest) resized to ``size`` x ``size``."""
    from PIL import Image

    image = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))
    mask = np.asarray(Image.fromarray(region).resize((size, size), Image.Resampling.NEAREST))
    return np.array(image), np.array(mask)


def region_crop(
    image: np.ndarray,
    mask: np.ndarray,
    box: Sequence[int],
    *,
    margin: float = 0.1,
    background: str = "blur",
    valid: np.ndarray | None = None,
    fill: Sequence[int] = CLIP_FILL,
    size: int | None = None,
) -> np.ndarray:
    """The square ``(side, side, C)`` uint8 crop CLIP scores for one region.

    Args:
        image: ``(H, W, C)`` uint8 image holding the region.
        mask: ``(H, W)`` bool, the region.
        box: the region's box ``(x0, y0, x1, y1)`` in ``image`` pixels (maxima inclusive).
        margin: context around the box, as a fraction of its longer side per side.
        background: ``"blur"``, ``"grey"`` or ``"keep"`` outside the mask (module docstring).
        valid: ``(H, W)`` bool, False where the image holds no data (filled like the outside).
        fill: colour of the outside and of invalid pixels.
        size: resize a larger square to ``size`` pixels before the background rule (CLIP's input size:
            the model resizes to it anyway, and the blur's cost stays bounded for large regions).
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, C) uint8, got {image.dtype} of shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {image.shape[:2]}")
    height, width, channels = image.shape
    if len(fill) != channels:
        raise ValueError(f"fill has {len(fill)} values but the image has {channels} channels")
    left, top, side = square_box(box, margin)
    crop = np.empty((side, side, channels), np.uint8)
    crop[:] = np.asarray(fill, np.uint8)
    region = np.zeros((side, side), bool)
    ys0, xs0 = max(top, 0), max(left, 0)
    ys1, xs1 = min(top + side, height), min(left + side, width)
    if ys1 > ys0 and xs1 > xs0:
        inner = (slice(ys0 - top, ys1 - top), slice(xs0 - left, xs1 - left))
        source = (slice(ys0, ys1), slice(xs0, xs1))
        present = np.ones((ys1 - ys0, xs1 - xs0), bool) if valid is None else valid[source]
        patch = crop[inner]
        patch[present] = image[source][present]
        region[inner] = mask[source] & present
    if size is not None and side > size:
        crop, region = _shrink(crop, region, int(size))
        side = int(size)
    if background == "keep":
        return crop
    outside = ~region
    if background == "grey":
        crop[outside] = np.asarray(fill, np.uint8)
    else:
        crop[outside] = _blur(crop, BLUR_FRACTION * side)[outside]
    return crop


def check_text(tokenizer: Any, text: str) -> str:
    """The query stripped; empty text and text beyond the text encoder's context are refused."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the text prompt is empty; describe what to find, e.g. --text 'swimming pool'")
    context = int(tokenizer.context_length)
    length = len(tokenizer.encode(text)) + 2  # start and end of text
    if length > context:
        raise PromptTooLongError(
            f"the text prompt is {length} tokens (with start and end), but the CLIP text encoder takes at "
            f"most {context} ({context - 2} for the text itself, fewer once wrapped in a template); "
            "shorten it"
        )
    return text


@dataclass
class RegionScores:
    """Per-region scores: softmax ``probability`` of the query against the negatives, ``cosine``."""

    probability: np.ndarray
    cosine: np.ndarray

    def __len__(self) -> int:
        return len(self.cosine)

    def get(self, measure: str) -> np.ndarray:
        if measure not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {measure!r}")
        return self.probability if measure == "probability" else self.cosine


class RegionScorer:
    """Scores region crops against a text query with a CLIP model, in batches.

    Args:
        clip: the loaded CLIP model (:func:`~rsvit.models.clip.load_clip` or ``wrap_model``).
        text: the query, e.g. ``"swimming pool"``.
        templates: template set name, file, or templates (default the preset's, else ``rs-general``).
        negatives: prompts competing with the query in the softmax (the query itself is left out).
        averaging: class-embedding rule (default the preset's, else normalise-then-mean).
        logit_scale: ``"fixed"`` (100), ``"model"`` or a number (also as text, from a command line).
        batch_size: crops encoded together.
    """

    def __init__(
        self,
        clip: LoadedClip,
        text: str,
        *,
        templates: str | Sequence[str] | None = None,
        negatives: Sequence[str] = DEFAULT_NEGATIVES,
        averaging: str | None = None,
        logit_scale: str | float = "fixed",
        batch_size: int = 32,
    ) -> None:
        preset = CLIP_PRESETS.get(clip.preset) if clip.preset else None
        self.clip = clip
        self.text = check_text(clip.tokenizer, text)
        if templates is None:
            templates = preset.templates if preset else "rs-general"
        self.templates = resolve_templates(templates) if isinstance(templates, str) else tuple(templates)
        self.averaging = averaging or (preset.averaging if preset else NORMALISE_THEN_MEAN)
        query = self.text.lower()
        kept: list[str] = []
        for negative in negatives:
            negative = negative.strip()
            if negative and negative.lower() != query and negative.lower() not in (n.lower() for n in kept):
                kept.append(negative)
        self.negatives = tuple(kept)
        self.prompts = (self.text, *self.negatives)
        weights, _ = cached_text_classifier(
            clip.model, clip.tokenizer, list(self.prompts), self.templates, self.averaging
        )
        try:
            scale = ZeroShotClassifier.scale_from(clip.model, logit_scale)
        except (TypeError, ValueError):
            raise ValueError(
                f"logit scale must be 'fixed', 'model' or a number (--logit-scale), got {logit_scale!r}"
            ) from None
        self.classifier = ZeroShotClassifier(clip.model, weights, scale)
        self.batch_size = max(int(batch_size), 1)
        from open_clip.model import get_model_preprocess_cfg

        size = get_model_preprocess_cfg(clip.model)["size"]
        #: side of the model's input: crops larger than this can be shrunk to it (``region_crop(size=)``)
        self.input_size = int(size) if isinstance(size, int) else int(max(size))

    def preprocess(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """The CLIP model's own eval transform of each crop, stacked ``(N, 3, S, S)``."""
        from PIL import Image

        return torch.stack([self.clip.preprocess(Image.fromarray(crop)) for crop in crops])

    def score(self, crops: Sequence[np.ndarray]) -> RegionScores:
        """Scores of square uint8 RGB crops (:func:`region_crop`)."""
        device = next(self.clip.model.parameters()).device
        probabilities, cosines = [], []
        for start in range(0, len(crops), self.batch_size):
            images = self.preprocess(crops[start : start + self.batch_size]).to(device)
            logits = self.classifier.logits(images)
            probabilities.append(logits.softmax(dim=-1)[:, 0].cpu())
            cosines.append((logits[:, 0] / self.classifier.logit_scale).cpu())
        if not probabilities:
            return RegionScores(np.zeros(0, np.float64), np.zeros(0, np.float64))
        return RegionScores(torch.cat(probabilities).double().numpy(), torch.cat(cosines).double().numpy())


def select_regions(
    values: np.ndarray, threshold: float | None = None, top_k: int | None = None
) -> np.ndarray:
    """Indices of the regions to keep, best first: ``values >= threshold``, then the first ``top_k``."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    values = np.asarray(values, np.float64)
    order = np.argsort(-values, kind="stable")
    if threshold is not None:
        order = order[values[order] >= threshold]
    return order if top_k is None else order[:top_k]
