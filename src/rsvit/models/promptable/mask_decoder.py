"""SAM's mask decoder.

Output tokens + prompt tokens go through the two-way transformer, then per-token hypernetwork MLPs
applied to an upscaled image map, and an IoU head scoring each mask.

Token 0 is the single-mask output used when a prompt is unambiguous; tokens 1..K are the multimask
outputs. SAM 1's IoU head has no sigmoid, so scores may leave [0, 1].
"""

from __future__ import annotations

import itertools

import torch
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torch.nn import functional as F

from rsvit.models.promptable.two_way_transformer import TwoWayTransformer

__all__ = ["MaskDecoder", "ReluMLP"]


class ReluMLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predict low-res mask logits ``(B, K, 4g, 4g)`` and IoU scores ``(B, K)`` from embeddings.

    Args:
        transformer_dim: token width ``C``.
        transformer: the :class:`TwoWayTransformer` of width ``C``.
        num_multimask_outputs: masks returned for ambiguous prompts (3).
        iou_head_depth: Linear layers of the IoU head.
        iou_head_hidden_dim: hidden width of the IoU head.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4, eps=1e-6),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            ReluMLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = ReluMLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        """Decode masks for ``B`` prompts sharing one image embedding ``(1, C, g, g)``.

        ``multimask_output=True`` returns tokens 1..K, otherwise token 0 only; picking the best of the
        multimask outputs is left to the caller.
        """
        masks, iou = self.predict_all(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    def predict_all(
        self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Masks and scores of every output token (single-mask token first)."""
        batch = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse], dim=1)
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"{image_embeddings.shape[0]} image embeddings for {batch} prompts; pass one embedding "
                "shared by all prompts or one per prompt"
            )
        if image_embeddings.shape[0] == 1 and _same_for_every_prompt(dense):
            # One image and no mask prompts: the image side is the same for all prompts until the first
            # image -> token attention, so it enters the transformer once and broadcasts there (the
            # layer-0 key/value/query projections of the image run once instead of once per prompt).
            src = image_embeddings + dense[:1]
            pos = image_pe
        else:
            src = image_embeddings.expand(batch, -1, -1, -1) + dense
            pos = torch.repeat_interleave(image_pe, batch, dim=0)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        src = src.expand(batch, -1, -1)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, c, h, w))
        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


def _same_for_every_prompt(dense: Tensor) -> bool:
    """Whether the dense prompt embeddings are one tensor broadcast over the batch (no mask prompts)."""
    return dense.shape[0] == 1 or dense.stride(0) == 0
