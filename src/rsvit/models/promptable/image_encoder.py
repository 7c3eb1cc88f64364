"""SAM's image encoder: timm's ``VisionTransformerSAM`` configured exactly like the official ViT.

timm already implements the official trunk (channels-last tokens, zero-padded windows whose padding
tokens take part in the softmax, decomposed relative positions computed from the unscaled queries, the
conv + LayerNorm2d neck with eps 1e-6). Two settings have to be passed explicitly because timm's defaults
differ from the official model:

* the block LayerNorms must use eps 1e-6 (timm's ``samvit_*`` entry points keep ``nn.LayerNorm``'s 1e-5,
  which moves the embedding by ~5e-4);
* no classifier head (``num_classes=0``, ``global_pool=""``), so the module holds only checkpoint weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import Tensor, nn

__all__ = ["SamImageEncoder"]


class SamImageEncoder(nn.Module):
    """ViT trunk + neck mapping a padded ``(B, 3, S, S)`` image to a ``(B, C, S/16, S/16)`` embedding.

    Args:
        img_size: side ``S`` of the square model input (1024 for the released checkpoints).
        patch_size: patch side (16).
        embed_dim: ViT width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        window_size: window side of the non-global blocks.
        global_attn_indexes: blocks that attend over the whole token grid.
        out_chans: neck width ``C`` (the prompt/decoder width).
        mlp_ratio: MLP hidden width over ``D``.
        in_chans: input bands (3 for the released checkpoints).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        out_chans: int = 256,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.out_chans = out_chans
        self.trunk = VisionTransformerSAM(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            global_pool="",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,
            use_abs_pos=True,
            use_rel_pos=True,
            window_size=window_size,
            global_attn_indexes=tuple(global_attn_indexes),
            neck_chans=out_chans,
        )

    @property
    def grid_size(self) -> int:
        """Token-grid side ``S / patch_size``."""
        return self.img_size // self.patch_size

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"the SAM image encoder takes (B, C, {self.img_size}, {self.img_size}) input, got "
                f"{tuple(x.shape)}; resize the long side to {self.img_size} and pad (see "
                "rsvit.models.promptable.transforms)"
            )
        return self.trunk.forward_features(x)
