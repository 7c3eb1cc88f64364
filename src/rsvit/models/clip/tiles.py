"""A scene classifier seen as a dense model, so the raster engine can map tiles of a scene.

The engine maps windows to class maps for dense models ``(N, C, h, w)``. A scene classifier gives one
score vector per image ``(N, C)``; held constant over its window it is such a map, and everything of the
engine applies unchanged: nodata, the windows' blending (with no overlap every pixel takes its tile's
class; with overlap, the windows' scores are blended with the engine's smooth weights, a sliding-window
map), per-class probability bands, polygons, atomic outputs and ``resume``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WindowScores"]


class WindowScores(nn.Module):
    """``classifier(x)`` ``(N, C)`` broadcast over the window: ``(N, C, h, w)`` (a view, no copy)."""

    def __init__(self, classifier: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_classes = int(num_classes)  # read by the class-map output to size its bands

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(images)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"the classifier returned shape {tuple(logits.shape)}; expected (N, {self.num_classes})"
            )
        return logits[:, :, None, None].expand(-1, -1, *images.shape[-2:])
