"""Official Segment Anything checkpoint keys (``sam_vit_{b,l,h}_*.pth``) <-> :class:`Sam` keys.

| official                               | rsvit                                        |
|----------------------------------------|----------------------------------------------|
| ``image_encoder.*``                    | ``image_encoder.trunk.*`` (timm names)       |
| ``image_encoder.blocks.i.mlp.lin1/2``  | ``image_encoder.trunk.blocks.i.mlp.fc1/2``   |
| ``prompt_encoder.*``, ``mask_decoder.*`` | unchanged (our modules keep the official names) |

The prompt encoder's ``pe_layer.positional_encoding_gaussian_matrix`` buffer is part of the file and is
carried over as is; it must be loaded, never re-drawn. Keys outside the three prefixes raise, so a strict
load afterwards sees exactly our layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from rsvit.weights import WeightsMismatchError

__all__ = ["convert_official_sam_state_dict", "official_key", "rsvit_key"]

_MLP_OFFICIAL = re.compile(r"\.mlp\.lin([12])\.")
_MLP_TIMM = re.compile(r"\.mlp\.fc([12])\.")
_ENCODER = "image_encoder."
_TRUNK = "image_encoder.trunk."
_KEPT = ("prompt_encoder.", "mask_decoder.")


def rsvit_key(key: str) -> str:
    """The :class:`Sam` name of one official checkpoint key."""
    if key.startswith(_ENCODER):
        return _TRUNK + _MLP_OFFICIAL.sub(r".mlp.fc\1.", key[len(_ENCODER) :])
    if key.startswith(_KEPT):
        return key
    raise WeightsMismatchError(
        f"unexpected key {key!r} in a Segment Anything checkpoint (expected image_encoder.*, "
        "prompt_encoder.* or mask_decoder.*); is this a SAM 1 state dict?"
    )


def official_key(key: str) -> str:
    """The official checkpoint name of one :class:`Sam` key (inverse of :func:`rsvit_key`)."""
    if key.startswith(_TRUNK):
        return _ENCODER + _MLP_TIMM.sub(r".mlp.lin\1.", key[len(_TRUNK) :])
    if key.startswith(_KEPT):
        return key
    raise KeyError(f"{key!r} is not a Segment Anything model key")


def convert_official_sam_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Rename an official SAM state dict into the :class:`Sam` layout (values untouched).

    ``model`` is accepted for the converter-registry signature and not needed: the mapping is by name.
    """
    del model
    return {rsvit_key(key): value for key, value in state_dict.items()}
