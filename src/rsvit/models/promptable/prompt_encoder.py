"""SAM's prompt encoder: points, boxes and low-res masks -> sparse tokens and a dense map.

Coordinates arrive in the model-input frame (after the longest-side resize, before padding), x then y.
Sparse prompts are encoded with random Fourier features of the pixel *centre* (``+0.5``) normalised by
the input side; the Gaussian matrix of those features is a saved buffer of the checkpoint, so two models
only agree when it is loaded, never re-drawn.
"""

from __future__ import annotations

import math

import torch
from timm.layers import LayerNorm2d
from torch import Tensor, nn

__all__ = ["PromptEncoder", "RandomFourierPositionEncoding"]


class RandomFourierPositionEncoding(nn.Module):
    """``[sin(2π (2c − 1) G), cos(2π (2c − 1) G)]`` of normalised coordinates ``c`` in [0, 1]².

    Args:
        num_pos_feats: half the output width (columns of the Gaussian matrix).
    """

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        # Filled from the checkpoint; drawn here only so an untrained model is usable.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: Tensor) -> Tensor:
        """Encode normalised ``(..., 2)`` float32 coordinates to ``(..., 2 * num_pos_feats)``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def encode_pixels(self, coords: Tensor, input_size: tuple[int, int]) -> Tensor:
        """Encode ``(B, N, 2)`` pixel coordinates (already shifted to the pixel centre).

        The division happens in the dtype of ``coords`` (float64 grids stay float64 until here), then
        the features are computed in float32 as the official model does.
        """
        h, w = input_size
        scale = torch.tensor([w, h], dtype=coords.dtype, device=coords.device)
        return self.encode((coords / scale).to(torch.float32))

    def dense(self, size: tuple[int, int]) -> Tensor:
        """``(C, h, w)`` encoding of the cell centres of an ``h × w`` grid, coordinates stacked (x, y)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self.encode(grid).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Sparse (points, boxes) and dense (mask) prompt embeddings for the mask decoder.

    Args:
        embed_dim: prompt width ``C``.
        image_embedding_size: token grid ``(g, g)`` of the image embedding.
        input_image_size: model input ``(S, S)`` that prompt coordinates refer to.
        mask_in_chans: hidden width of the mask-downscaling path.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = RandomFourierPositionEncoding(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """``(1, C, g, g)`` positional encoding of the image tokens."""
        return self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: Tensor, labels: Tensor, pad: bool) -> Tensor:
        coords = coords + 0.5
        if pad:
            # A "not a point" token keeps the token count the decoder was trained with when no box is given.
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        emb = self.pe_layer.encode_pixels(coords, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        emb = emb + (labels == 0) * self.point_embeddings[0].weight
        emb = emb + (labels == 1) * self.point_embeddings[1].weight
        return emb

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.encode_pixels(corners, self.input_image_size)
        corner_tokens = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return emb + corner_tokens

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        masks: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Embed prompts.

        Args:
            points: coordinates ``(B, N, 2)`` (x, y in input pixels) and labels ``(B, N)``
                (1 foreground, 0 background, -1 ignored).
            boxes: ``(B, 4)`` as x0, y0, x1, y1 in input pixels.
            masks: ``(B, 1, 4g, 4g)`` low-res mask logits.

        Returns:
            sparse ``(B, N', C)`` (points, a padding point when no box is given, then 2 box corners) and
            dense ``(B, C, g, g)``.
        """
        batch = _batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        parts = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            coords, labels = points
            parts.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        sparse = torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return sparse, dense


def _batch_size(points: tuple[Tensor, Tensor] | None, boxes: Tensor | None, masks: Tensor | None) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
