"""Loading official Segment Anything checkpoints (``sam_vit_{b,l,h}_*.pth``) safely into :class:`Sam`.

The files are plain state dicts; they are read with :func:`rsvit.weights.read_checkpoint` (no code from
the file runs), the variant is recognised from the encoder's width and depth, and the converted keys are
loaded strictly, so a checkpoint of another size or family fails with a message that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import Tensor

from rsvit.models.promptable.convert import convert_official_sam_state_dict
from rsvit.models.promptable.sam import SAM_VARIANTS, Sam, SamConfig, build_sam
from rsvit.weights import WeightsMismatchError, read_checkpoint

__all__ = ["infer_sam_variant", "load_official_sam"]

_PATCH = "image_encoder.patch_embed.proj.weight"


def _describe(state_dict: Mapping[str, Tensor]) -> tuple[int, int]:
    if _PATCH not in state_dict:
        if any(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for k in state_dict):
            raise WeightsMismatchError(
                "this is a SAM 2 checkpoint; only SAM 1 (sam_vit_b/l/h) is supported so far"
            )
        raise WeightsMismatchError(f"not a Segment Anything checkpoint: no {_PATCH!r} entry")
    width = state_dict[_PATCH].shape[0]
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    return width, depth


def infer_sam_variant(state_dict: Mapping[str, Tensor]) -> str:
    """``vit_b``, ``vit_l`` or ``vit_h`` from an official state dict's encoder width and depth."""
    width, depth = _describe(state_dict)
    for name, config in SAM_VARIANTS.items():
        if (config.encoder_embed_dim, config.encoder_depth) == (width, depth):
            return name
    known = ", ".join(
        f"{n} ({c.encoder_embed_dim} wide, {c.encoder_depth} blocks)" for n, c in SAM_VARIANTS.items()
    )
    raise WeightsMismatchError(
        f"image encoder {width} wide with {depth} blocks matches no SAM variant ({known}); pass a SamConfig"
    )


def load_official_sam(path: str | os.PathLike[str], variant: str | SamConfig | None = None) -> Sam:
    """Build the SAM that an official checkpoint file holds and load it strictly.

    Args:
        path: ``sam_vit_*.pth`` (or a safetensors copy with the official keys).
        variant: expected variant name or a full :class:`SamConfig`; by default recognised from the file.
    """
    state_dict = read_checkpoint(path).state_dict
    if variant is None:
        variant = infer_sam_variant(state_dict)
    elif isinstance(variant, str):
        found = infer_sam_variant(state_dict)
        if found != variant:
            raise WeightsMismatchError(f"{os.fspath(path)} holds a SAM {found} model, not {variant}")
    model = build_sam(variant)
    converted = convert_official_sam_state_dict(state_dict)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        raise WeightsMismatchError(
            f"{os.fspath(path)} does not fit the requested SAM configuration: {exc}"
        ) from exc
    return model.eval()
