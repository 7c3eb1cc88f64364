"""BIT (Bitemporal Image Transformer) change detector, numerically equal to the official model.

Both dates go through the same feature extractor; a few semantic tokens per date are pooled from the
features, exchange context in a small transformer encoder, and are projected back onto the pixels
of their own date by a transformer decoder. The absolute feature difference is upsampled and
classified into no-change / change logits.

Two geometries exist:

* the official release (ResNet-18 cut after ``layer3``, stride 8): :func:`bit_resnet18_dd8` and
  :func:`bit_resnet18_dd8_dedim8` (the latter is the layout of the released LEVIR-CD checkpoint);
* the remote-sensing-pretraining variant on the stride-16 map of ResNet-50 / Swin-T / ViTAEv2-S:
  :func:`bit_rsp`.

The model expects already normalised inputs; the official pipelines differ here (see
:data:`OFFICIAL_PREPROCESSING` and :data:`RSP_PREPROCESSING`), so data configs must state theirs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from rsvit.models.backbones import create_backbone
from rsvit.models.backbones.vitaev2 import checkpoint_filter_fn
from rsvit.models.registry import register_task_model
from rsvit.models.spec import ModelSpec
from rsvit.weights.convert import register_converter

__all__ = [
    "BIT",
    "OFFICIAL_PREPROCESSING",
    "RSP_PREPROCESSING",
    "BITResNet18",
    "bit_resnet18_dd8",
    "bit_resnet18_dd8_dedim8",
    "bit_rsp",
    "convert_official_bit_state_dict",
    "convert_rsp_cd_state_dict",
]

logger = logging.getLogger(__name__)

# Input pipelines of the official trainings: ``x = (pixels * scale - mean) / std`` per band.
# BIT_CD maps uint8 to [-1, 1]; the RSP change-detection code feeds raw 0..255 values on purpose.
OFFICIAL_PREPROCESSING: dict[str, Any] = {"scale": 1 / 255, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
RSP_PREPROCESSING: dict[str, Any] = {"scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


# -- feature extractor of the official release -------------------------------------------------------


class BITResNet18(nn.Module):
    """ResNet-18 stem + ``layer1..3`` with the official BIT quirks; returns (B, 256, H/8, W/8).

    The official code asks for stride-replaced dilation in ``layer3`` but its block silently resets
    the dilation to 1, so ``layer3`` is an ordinary stride-1 layer whose first block needs a 1x1
    projection shortcut (128 -> 256 channels). ``layer4`` is never run and therefore not built.
    """

    channels = 256
    reduction = 8

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 64, stride=1)
        self.layer2 = self._make_layer(64, 128, stride=2)
        self.layer3 = self._make_layer(128, 256, stride=1)

    @staticmethod
    def _make_layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


# -- transformer parts -----------------------------------------------------------------------------------


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, heads * d) -> (B, heads, N, d); the head index is the outer factor as officially."""
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class TokenSelfAttention(nn.Module):
    """Multi-head self-attention scaled by ``dim**-0.5`` (token width, not head width) as officially."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim**-0.5
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.proj = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(_merge_heads(out))


class TokenCrossAttention(nn.Module):
    """Pixels (queries) attend to the tokens of their own date (keys/values), scale ``dim**-0.5``."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim**-0.5
        inner = heads * dim_head
        self.q = nn.Linear(dim, inner, bias=False)
        self.k = nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, inner, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        q = _split_heads(self.q(x), self.heads)
        k = _split_heads(self.k(memory), self.heads)
        v = _split_heads(self.v(memory), self.heads)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(_merge_heads(out))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + MLP over the tokens of both dates."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenSelfAttention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm cross-attention + MLP; one LayerNorm normalises both the pixels and the tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenCrossAttention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.GELU)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), self.norm1(memory))
        return x + self.mlp(self.norm2(x))


class SemanticTokenizer(nn.Module):
    """``token_len`` spatial attention maps (softmax over all pixels) pool the features into tokens."""

    def __init__(self, dim: int, token_len: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, token_len, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        attention = self.conv(x).flatten(2).softmax(dim=-1)  # (B, L, HW)
        return attention @ x.flatten(2).transpose(1, 2)  # (B, L, C)


class ChangeClassifier(nn.Module):
    """3x3 conv (no bias) -> BN -> ReLU -> 3x3 conv to class logits."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(dim, num_classes, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.bn(self.conv1(x))))


# -- the change detector ------------------------------------------------------------------------------


class BIT(nn.Module):
    """Siamese BIT change detector: ``forward(a, b) -> logits (B, num_classes, H, W)``.

    Args:
        backbone: module mapping an image batch to one NCHW map (a tensor, or a one-element list as
            returned by :func:`rsvit.models.create_backbone` with a single ``out_indices`` entry).
        in_channels: channels of that map.
        backbone_stride: its stride, 8 (official release) or 16 (RSP variant). The map is upsampled
            x2 (nearest) before the projection; a stride-16 map gets one more nearest x2 after the
            difference, as in the RSP code.
        align_corners: of the final bilinear x4 upsampling (official False, RSP True).
        feature_norm: LayerNorm over the channels of the backbone map (the RSP Swin-T backbone has
            one per output; ResNet and ViTAEv2 do not).
        dec_dim_head: 64, or 8 for the released ``dedim8`` checkpoint.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_channels: int,
        backbone_stride: int = 8,
        *,
        num_classes: int = 2,
        dim: int = 32,
        token_len: int = 4,
        enc_depth: int = 1,
        dec_depth: int = 8,
        heads: int = 8,
        enc_dim_head: int = 64,
        dec_dim_head: int = 64,
        mlp_dim: int = 64,
        align_corners: bool = False,
        feature_norm: bool = False,
    ) -> None:
        super().__init__()
        if backbone_stride not in (8, 16):
            raise ValueError(f"BIT supports backbone maps of stride 8 or 16, got {backbone_stride}")
        self.backbone = backbone
        self.backbone_stride = backbone_stride
        self.align_corners = align_corners
        self.feature_norm = nn.LayerNorm(in_channels) if feature_norm else None
        self.feature_proj = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1)
        self.tokenizer = SemanticTokenizer(dim, token_len)
        self.pos_embed = nn.Parameter(torch.randn(1, 2 * token_len, dim))
        self.encoder = nn.ModuleList(
            EncoderLayer(dim, heads, enc_dim_head, mlp_dim) for _ in range(enc_depth)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(dim, heads, dec_dim_head, mlp_dim) for _ in range(dec_depth)
        )
        self.classifier = ChangeClassifier(dim, num_classes)
        self.preprocessing: dict[str, Any] = dict(OFFICIAL_PREPROCESSING)

    def init_official_weights(self) -> None:
        """The BIT_CD training start.

        Every conv/linear weight N(0, 0.02) with zero bias, every BatchNorm weight N(1, 0.02) with zero
        bias (running statistics are kept).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def _features(self, x: Tensor) -> Tensor:
        feat = self.backbone(x)
        if isinstance(feat, list | tuple):
            if len(feat) != 1:
                raise ValueError(f"BIT needs one feature map from its backbone, got {len(feat)}")
            feat = feat[0]
        if self.feature_norm is not None:
            feat = self.feature_norm(feat.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        feat = F.interpolate(feat, scale_factor=2.0, mode="nearest")
        return self.feature_proj(feat)

    def _decode(self, x: Tensor, tokens: Tensor) -> Tensor:
        b, c, h, w = x.shape
        seq = x.flatten(2).transpose(1, 2)
        for layer in self.decoder:
            seq = layer(seq, tokens)
        return seq.transpose(1, 2).reshape(b, c, h, w)

    @staticmethod
    def _check_pair(a: Tensor, b: Tensor) -> None:
        if a.ndim != 4 or b.ndim != 4:
            raise ValueError(
                f"BIT expects two (B, C, H, W) batches, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if a.shape != b.shape:
            raise ValueError(
                f"the two dates must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}; "
                "resample or crop them onto one common pixel grid first"
            )

    def forward_with_intermediates(self, a: Tensor, b: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits plus the intermediate tensors (features, tokens, encoder/decoder outputs, difference)."""
        self._check_pair(a, b)
        height, width = a.shape[-2:]
        feat_a, feat_b = self._features(a), self._features(b)
        tokens_a, tokens_b = self.tokenizer(feat_a), self.tokenizer(feat_b)
        tokens = torch.cat([tokens_a, tokens_b], dim=1) + self.pos_embed
        encoder_in = tokens
        for layer in self.encoder:
            tokens = layer(tokens)
        ctx_a, ctx_b = tokens.chunk(2, dim=1)
        dec_a, dec_b = self._decode(feat_a, ctx_a), self._decode(feat_b, ctx_b)
        diff = (dec_a - dec_b).abs()
        x = diff
        if self.backbone_stride == 16:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=self.align_corners)
        logits = self.classifier(x)
        if logits.shape[-2] < height or logits.shape[-1] < width:
            raise ValueError(
                f"the output {tuple(logits.shape[-2:])} is smaller than the input {(height, width)}; "
                f"check backbone_stride={self.backbone_stride}"
            )
        # Sides that are not multiples of the stride give a slightly larger map anchored top-left.
        logits = logits[..., :height, :width]
        intermediates = {
            "features_a": feat_a,
            "features_b": feat_b,
            "tokens_a": tokens_a,
            "tokens_b": tokens_b,
            "encoder_in": encoder_in,
            "encoder_out": tokens,
            "decoder_out_a": dec_a,
            "decoder_out_b": dec_b,
            "absdiff": diff,
        }
        return logits, intermediates

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Change logits (B, num_classes, H, W) for the dates ``a`` (earlier) and ``b`` (later)."""
        return self.forward_with_intermediates(a, b)[0]


# -- named variants ----------------------------------------------------------------------------------


def bit_resnet18_dd8(num_classes: int = 2, in_chans: int = 3, official_init: bool = True) -> BIT:
    """Official ``base_transformer_pos_s4_dd8`` (the model BIT_CD's training script trains).

    ``official_init`` applies the N(0, 0.02) initialisation the official code ends up with.
    """
    return _bit_resnet18(num_classes, in_chans, dec_dim_head=64, official_init=official_init)


def bit_resnet18_dd8_dedim8(num_classes: int = 2, in_chans: int = 3, official_init: bool = True) -> BIT:
    """Official ``base_transformer_pos_s4_dd8_dedim8`` (decoder head width 8).

    The released LEVIR-CD checkpoint's architecture.
    """
    return _bit_resnet18(num_classes, in_chans, dec_dim_head=8, official_init=official_init)


def _bit_resnet18(num_classes: int, in_chans: int, dec_dim_head: int, official_init: bool) -> BIT:
    backbone = BITResNet18(in_chans)
    model = BIT(
        backbone, backbone.channels, backbone.reduction, num_classes=num_classes, dec_dim_head=dec_dim_head
    )
    if official_init:
        model.init_official_weights()
    model.weights_family = "bit"  # how rsvit.weights converts official checkpoints for it
    return model


# Level of each backbone's stride-16 map, in ``create_backbone``'s ``out_indices`` numbering.
_RSP_STRIDE16_INDEX: dict[str, int] = {"resnet50": 3, "swin_t": 2, "vitaev2_s": 2}
_RSP_BACKBONE_KWARGS: dict[str, dict[str, Any]] = {
    "vitaev2_s": {"drop_path_rate": 0.3},
    "swin_t": {"drop_path_rate": 0.3, "proj_drop_rate": 0.3},
}


def bit_rsp(
    backbone_name: str,
    num_classes: int = 2,
    in_chans: int = 3,
    out_index: int | None = None,
    feature_norm: bool | None = None,
    **backbone_kwargs: Any,
) -> BIT:
    """BIT as in the RSP change-detection code, on the stride-16 map of ``backbone_name``.

    Known: ``resnet50`` (1024 ch), ``swin_t`` (384 ch, with a LayerNorm on its output) and
    ``vitaev2_s`` (256 ch); other :func:`~rsvit.models.create_backbone` names need ``out_index``.
    Drop-path defaults follow the RSP training (0.3 for the transformers). The RSP pipeline feeds
    raw 0..255 pixels (``model.preprocessing``).
    """
    if out_index is None:
        if backbone_name not in _RSP_STRIDE16_INDEX:
            raise ValueError(
                f"no known stride-16 level for backbone {backbone_name!r} (known: "
                f"{', '.join(sorted(_RSP_STRIDE16_INDEX))}); pass out_index"
            )
        out_index = _RSP_STRIDE16_INDEX[backbone_name]
    kwargs = {**_RSP_BACKBONE_KWARGS.get(backbone_name, {}), **backbone_kwargs}
    backbone = create_backbone(backbone_name, out_indices=(out_index,), in_chans=in_chans, **kwargs)
    if backbone.reductions != [16]:
        raise ValueError(
            f"level {out_index} of {backbone_name!r} has stride {backbone.reductions[0]}; "
            "the RSP BIT needs the stride-16 map"
        )
    if feature_norm is None:
        feature_norm = backbone_name.startswith("swin")
    model = BIT(
        backbone,
        backbone.channels[0],
        16,
        num_classes=num_classes,
        align_corners=True,
        feature_norm=feature_norm,
    )
    model.preprocessing = dict(RSP_PREPROCESSING)
    model.weights_family = "rsp_bit_cd"
    return model


@register_task_model("change", "bit", default=True)
def _bit_from_spec(spec: ModelSpec) -> BIT:
    """``backbone="bit_resnet18"``: the official release geometry; any other backbone: the RSP variant."""
    if spec.backbone == "bit_resnet18":
        return bit_resnet18_dd8(num_classes=spec.num_classes, in_chans=spec.in_chans, **spec.head_kwargs)
    return bit_rsp(
        spec.backbone, num_classes=spec.num_classes, in_chans=spec.in_chans, **spec.backbone_kwargs
    )


# -- official checkpoint layouts -------------------------------------------------------------------------

_HEAD_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^conv_pred\."), "feature_proj."),
    (re.compile(r"^conv_a\."), "tokenizer.conv."),
    (re.compile(r"^pos_embedding$"), "pos_embed"),
    (re.compile(r"^classifier\.0\."), "classifier.conv1."),
    (re.compile(r"^classifier\.1\."), "classifier.bn."),
    (re.compile(r"^classifier\.3\."), "classifier.conv2."),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.fn\.norm\."), r"encoder.\1.norm1."),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv\."), r"encoder.\1.attn.qkv."),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\."), r"encoder.\1.attn.proj."),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.fn\.norm\."), r"encoder.\1.norm2."),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0\."), r"encoder.\1.mlp.fc1."),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3\."), r"encoder.\1.mlp.fc2."),
    (re.compile(r"^transformer_decoder\.layers\.(\d+)\.0\.fn\.norm\."), r"decoder.\1.norm1."),
    (re.compile(r"^transformer_decoder\.layers\.(\d+)\.0\.fn\.fn\.to_([qkv])\."), r"decoder.\1.attn.\2."),
    (re.compile(r"^transformer_decoder\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\."), r"decoder.\1.attn.proj."),
    (re.compile(r"^transformer_decoder\.layers\.(\d+)\.1\.fn\.norm\."), r"decoder.\1.norm2."),
    (re.compile(r"^transformer_decoder\.layers\.(\d+)\.1\.fn\.fn\.net\.0\."), r"decoder.\1.mlp.fc1."),
    (re.compile(r"^transformer_decoder\.layers\.(\d+)\.1\.fn\.fn\.net\.3\."), r"decoder.\1.mlp.fc2."),
]


def _strip_module(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _rename_bit_part(key: str) -> str:
    for pattern, repl in _HEAD_RENAMES:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    raise ValueError(f"unexpected key {key!r} in an official BIT state dict")


@register_converter("bit")
def convert_official_bit_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Maps an official BIT_CD ``model_G_state_dict`` to :class:`BIT` with :class:`BITResNet18`.

    The state dict may be ``module.``-prefixed. The never-run ``resnet.layer4.*`` / ``resnet.fc.*`` are
    dropped (and counted in the log). ``model`` is accepted for the converter signature and not needed.
    """
    out: dict[str, Tensor] = {}
    dropped = 0
    for key, value in _strip_module(state_dict).items():
        if key.startswith(("resnet.layer4.", "resnet.fc.")):
            dropped += 1
            continue
        if key.startswith("resnet."):
            out["backbone." + key.removeprefix("resnet.")] = value
        else:
            out[_rename_bit_part(key)] = value
    logger.info("BIT checkpoint: dropped %d unused entries (resnet.layer4.*, resnet.fc.*)", dropped)
    return out


@register_converter("rsp_bit_cd")
def convert_rsp_cd_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Maps the state dict of an RSP change-detection model (ViTAEv2-S BIT) to :func:`bit_rsp`.

    The ``backbone.*`` part goes through the ViTAEv2 converter (dropping the unused dense norms) and
    loses stage 3, which BIT never runs; the counts are logged.
    """
    sd = _strip_module(state_dict)
    backbone_sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    converted = checkpoint_filter_fn(backbone_sd)
    out: dict[str, Tensor] = {}
    unused_stage = 0
    for key, value in converted.items():
        if key.startswith("stages.3."):
            unused_stage += 1
            continue
        out["backbone.model." + key] = value
    for key, value in sd.items():
        if not key.startswith("backbone."):
            out[_rename_bit_part(key)] = value
    logger.info(
        "RSP BIT checkpoint: dropped %d backbone entries without use (dense norms, relative-position "
        "tables) and %d of the unused stage 3",
        len(backbone_sd) - len(converted),
        unused_stage,
    )
    return out
