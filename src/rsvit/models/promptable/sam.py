"""Segment Anything: image encoder + prompt encoder + mask decoder, and the pixel pre/postprocessing.

The model is a plain composition; the stateful predictor (embed once, prompt many) and the automatic
mask generator live beside it (:mod:`rsvit.models.promptable.predictor`,
:mod:`rsvit.models.promptable.automatic`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rsvit.models.promptable.image_encoder import SamImageEncoder
from rsvit.models.promptable.mask_decoder import MaskDecoder
from rsvit.models.promptable.prompt_encoder import PromptEncoder
from rsvit.models.promptable.two_way_transformer import TwoWayTransformer

__all__ = ["SAM_VARIANTS", "Sam", "SamConfig", "assemble_sam", "build_sam"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamConfig:
    """Every size of a SAM 1 model; the defaults are those of ``vit_b``."""

    img_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_window_size: int = 14
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, ...] = field(default=PIXEL_MEAN)
    pixel_std: tuple[float, ...] = field(default=PIXEL_STD)
    mask_threshold: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


SAM_VARIANTS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
}


class Sam(nn.Module):
    """Promptable segmentation model.

    ``pixel_mean``/``pixel_std`` (0-255 scale) are non-persistent buffers: checkpoints do not hold them.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        img_size: int,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
        mask_threshold: float = 0.0,
        config: SamConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config  # the sizes it was built from (None for hand-assembled models)
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.img_size = img_size
        self.mask_threshold = mask_threshold
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    def preprocess(self, x: Tensor) -> Tensor:
        """Normalise a resized ``(B, C, h, w)`` image (0-255), then zero-pad right/bottom to ``S × S``.

        Padding after normalisation makes the padded area the mean colour, as in training.
        """
        if x.shape[1] != self.pixel_mean.shape[0]:
            raise ValueError(
                f"the model expects {self.pixel_mean.shape[0]} bands, the image has {x.shape[1]}; select or "
                "adapt the bands first"
            )
        h, w = x.shape[-2:]
        if max(h, w) > self.img_size:
            raise ValueError(
                f"image of {h}x{w} is larger than the model input {self.img_size}; resize it first"
            )
        x = (x - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Tensor:
        """Low-res logits -> logits at the original image size.

        Upscale to ``S × S`` first, crop the unpadded ``input_size`` part, then resize to ``original_size``
        (both bilinear, ``align_corners=False``); resizing straight to the original size would stretch the
        padding into the image.
        """
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(
            masks, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False
        )

    def forward(
        self,
        image: Tensor,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        masks: Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Preprocessed ``(1, 3, S, S)`` image + prompts in the input frame -> low-res logits, IoU scores."""
        embedding = self.image_encoder(image)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(
            embedding, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )


def build_sam(variant: str | SamConfig = "vit_b", **overrides: object) -> Sam:
    """Build an untrained SAM from a variant name (``vit_b``, ``vit_l``, ``vit_h``) or a :class:`SamConfig`.

    Keyword overrides replace config fields, e.g. ``build_sam("vit_b", img_size=512)``. Load official
    weights with :func:`rsvit.models.promptable.convert.convert_official_sam_state_dict`.
    """
    if isinstance(variant, str):
        try:
            config = SAM_VARIANTS[variant]
        except KeyError:
            raise ValueError(
                f"unknown SAM variant {variant!r}; choose one of {sorted(SAM_VARIANTS)}"
            ) from None
    else:
        config = variant
    if overrides:
        config = replace(config, **overrides)
    encoder = SamImageEncoder(
        img_size=config.img_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        window_size=config.encoder_window_size,
        global_attn_indexes=config.encoder_global_attn_indexes,
        out_chans=config.prompt_embed_dim,
        mlp_ratio=config.encoder_mlp_ratio,
        in_chans=config.in_chans,
    )
    return assemble_sam(config, encoder)


def assemble_sam(config: SamConfig, image_encoder: nn.Module) -> Sam:
    """A SAM around ``image_encoder`` with the prompt encoder and mask decoder that ``config`` sizes.

    The encoder must map the preprocessed ``(B, C, S, S)`` image to ``(B, prompt_embed_dim, S/16, S/16)``.
    """
    grid = config.img_size // config.patch_size
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.img_size, config.img_size),
        mask_in_chans=config.mask_in_chans,
    )
    transformer = TwoWayTransformer(
        depth=config.decoder_depth,
        embedding_dim=config.prompt_embed_dim,
        num_heads=config.decoder_num_heads,
        mlp_dim=config.decoder_mlp_dim,
        attention_downsample_rate=config.attention_downsample_rate,
    )
    decoder = MaskDecoder(
        transformer_dim=config.prompt_embed_dim,
        transformer=transformer,
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    model = Sam(
        image_encoder,
        prompt_encoder,
        decoder,
        config.img_size,
        config.pixel_mean,
        config.pixel_std,
        config.mask_threshold,
        config=config,
    )
    return model.eval()
