"""Official DPT checkpoint keys (``isl-org/DPT``) -> the module names of :class:`rsvit.models.dpt.DPT`.

| official                                        | rsvit                                          |
|-------------------------------------------------|------------------------------------------------|
| ``pretrained.model.*``                          | ``backbone.vit.*`` (timm names, unchanged)     |
| ``pretrained.act_postprocess{i}.0.project.0.*`` | ``backbone.reassemble.{i-1}.readout.proj.*``   |
| ``pretrained.act_postprocess{i}.3.*`` / ``.4.*``| ``backbone.reassemble.{i-1}.conv.*`` / ``.resample.*`` |
| ``scratch.layer{i}_rn.*``                       | ``head.projections.{i-1}.*``                   |
| ``scratch.refinenet{i}.resConfUnit1/2.*``       | ``head.fusions.{i-1}.skip_unit/unit.*``        |
| ``scratch.refinenet{i}.out_conv.*``             | ``head.fusions.{i-1}.out_conv.*``              |
| ``scratch.output_conv.{0,2,4}.*`` (depth)       | ``head.output.conv1/conv2/conv3.*``            |
| ``scratch.output_conv.{0,1,4}.*`` (segmentation)| ``head.output.conv/bn/classifier.*``           |
| ``auxlayer.{0,1,4}.*``                          | ``head.aux.conv/bn/classifier.*``              |

Dropped because they never influence the output (the official forward computes or stores them and
discards them): the ViT classifier ``pretrained.model.head.*``, the final ViT LayerNorm
``pretrained.model.norm.*`` and ``scratch.refinenet4.resConfUnit1.*`` (the coarsest fusion block has no skip).
Anything else that does not match raises, so a strict load afterwards sees exactly our keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from rsvit.weights.convert import register_converter

__all__ = ["UNUSED_OFFICIAL_PREFIXES", "convert_official_dpt_state_dict"]

UNUSED_OFFICIAL_PREFIXES: tuple[str, ...] = (
    "pretrained.model.head.",
    "pretrained.model.norm.",
    "scratch.refinenet4.resConfUnit1.",
)

_DEPTH_OUTPUT = {"0": "conv1", "2": "conv2", "4": "conv3"}
_SEG_OUTPUT = {"0": "conv", "1": "bn", "4": "classifier"}
_REASSEMBLE = {"0.project.0": "readout.proj", "3": "conv", "4": "resample"}
_UNITS = {"resConfUnit1": "skip_unit", "resConfUnit2": "unit", "out_conv": "out_conv"}


def _rename(key: str, segmentation: bool) -> str | None:
    if key.startswith("pretrained.model."):
        return "backbone.vit." + key[len("pretrained.model.") :]
    if m := re.fullmatch(r"pretrained\.act_postprocess([1-4])\.(0\.project\.0|3|4)\.(\w+)", key):
        return f"backbone.reassemble.{int(m[1]) - 1}.{_REASSEMBLE[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"scratch\.layer([1-4])_rn\.(\w+)", key):
        return f"head.projections.{int(m[1]) - 1}.{m[2]}"
    if m := re.fullmatch(r"scratch\.refinenet([1-4])\.(resConfUnit1|resConfUnit2|out_conv)\.(.+)", key):
        return f"head.fusions.{int(m[1]) - 1}.{_UNITS[m[2]]}.{m[3]}"
    table = _SEG_OUTPUT if segmentation else _DEPTH_OUTPUT
    if (m := re.fullmatch(r"scratch\.output_conv\.(\d)\.(\w+)", key)) and m[1] in table:
        return f"head.output.{table[m[1]]}.{m[2]}"
    if (m := re.fullmatch(r"auxlayer\.(\d)\.(\w+)", key)) and m[1] in _SEG_OUTPUT:
        return f"head.aux.{_SEG_OUTPUT[m[1]]}.{m[2]}"
    return None


@register_converter("dpt")
def convert_official_dpt_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module | None = None
) -> dict[str, Tensor]:
    """Renames an official DPT state dict (depth or segmentation) to :class:`~rsvit.models.dpt.DPT` keys.

    Accepts the plain state dict of the released ``.pt`` files (a shared ``module.`` prefix is removed).
    With ``model`` given, classifier entries whose class count differs from the model's are dropped, so an
    ADE20K checkpoint can initialise a model for other classes (load non-strictly then).

    Raises:
        KeyError: for keys outside the official layout, naming them.
    """
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    segmentation = any(k.startswith(("scratch.output_conv.1.", "auxlayer.")) for k in state_dict)
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(UNUSED_OFFICIAL_PREFIXES):
            continue
        new = _rename(key, segmentation)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise KeyError(f"{len(unknown)} keys are not part of the official DPT layout: {shown}")
    if model is not None:
        target = model.state_dict()
        for key in [k for k in out if ".classifier." in k]:
            if key in target and target[key].shape != out[key].shape:
                del out[key]
    return out
