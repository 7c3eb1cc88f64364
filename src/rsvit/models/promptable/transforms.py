"""Longest-side resize of images and prompts into SAM's input frame.

The image is resized with Pillow's bilinear filter on uint8 data (antialiased when shrinking, rounded
back to uint8), which is what the released models were run with; torch's resamplers give visibly
different embeddings. Prompt coordinates are scaled by the same per-axis factors, without a half-pixel
shift (the prompt encoder adds it).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["ResizeLongestSide", "preprocess_shape"]


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(newh, neww)`` with the long side equal to ``long_side``, rounded half up as the official code."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ResizeLongestSide:
    """Resize images and prompt coordinates so that the longest image side equals ``target_length``."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """Model-input ``(h, w)`` of an image of ``original_size`` (before padding)."""
        return preprocess_shape(int(original_size[0]), int(original_size[1]), self.target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """Resize an ``(H, W, C)`` uint8 image with Pillow bilinear resampling."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(
                f"expected an (H, W, C) uint8 image, got {image.dtype} with shape {image.shape}; scale the "
                "bands to 0-255 and cast to uint8 first"
            )
        newh, neww = self.input_size(image.shape[:2])
        size = (neww, newh)
        if image.shape[2] == 3:
            return np.array(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        # Other band counts go band by band: Pillow would treat a 4th band as alpha and premultiply it.
        bands = [
            np.array(
                Image.fromarray(np.ascontiguousarray(image[..., i])).resize(size, Image.Resampling.BILINEAR)
            )
            for i in range(image.shape[2])
        ]
        return np.stack(bands, axis=-1)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Scale ``(..., 2)`` pixel coordinates (x, y) of the original image to the input frame (float64)."""
        old_h, old_w = original_size
        new_h, new_w = self.input_size(original_size)
        coords = np.array(coords, dtype=np.float64)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Scale ``(..., 4)`` boxes x0, y0, x1, y1 to the input frame (float64), returned as ``(N, 4)``."""
        boxes = self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size)
        return boxes.reshape(-1, 4)

    def apply_coords_torch(self, coords: Tensor, original_size: tuple[int, int]) -> Tensor:
        """Tensor version of :meth:`apply_coords`; computes in float32 like the official batched path."""
        old_h, old_w = original_size
        new_h, new_w = self.input_size(original_size)
        coords = coords.to(torch.float32).clone()
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: Tensor, original_size: tuple[int, int]) -> Tensor:
        """Tensor version of :meth:`apply_boxes` (float32)."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
