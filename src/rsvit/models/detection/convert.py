"""Official Oriented R-CNN checkpoints (OBBDetection, RSP, mmrotate) -> :class:`OrientedRCNN` keys.

| official                                   | rsvit                                      |
|--------------------------------------------|--------------------------------------------|
| ``backbone.*``                             | ``backbone.model.*`` via the backbone family's converter |
| ``backbone.norm{i}.*`` (Swin)              | ``backbone_norms.{i}.*``                   |
| ``neck.lateral_convs.{i}.conv.*``          | ``neck.lateral_convs.{i}.*``               |
| ``neck.fpn_convs.{i}.conv.*``              | ``neck.fpn_convs.{i}.*``                   |
| ``rpn_head.rpn_{conv,cls,reg}.*``          | same                                       |
| ``roi_head.bbox_head.*``                   | ``bbox_head.*``                            |

Angles: rsvit works in le90, whose angle is the negative of OBBDetection's (and RSP's). The only
weights that see the angle are the ``dtheta`` output of the box regressor (row 4 of
``roi_head.bbox_head.fc_reg``), so checkpoints in OBBDetection's convention get that row negated;
mmrotate ``le90`` checkpoints are taken as they are. The RPN's midpoint offsets are convention-free.

Class order: OBBDetection / RSP checkpoints index DOTA-v1.0 classes in BboxToolkit's order
(:data:`BBOXTOOLKIT_DOTA1_0_CLASSES`), rsvit and mmrotate in the DOTA devkit's
(:data:`~rsvit.structures.class_names.DOTA_V1_0_CLASSES`). With ``source_classes`` / ``classes`` the rows
of ``fc_cls`` (the background row stays last) are reordered so that label ``i`` is ``classes[i]``; the
``orcn`` weights family does this for every 15-class checkpoint. Nothing else depends on the class
(the box regression is class-agnostic).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from rsvit.weights.convert import convert_state_dict

__all__ = [
    "BBOXTOOLKIT_DOTA1_0_CLASSES",
    "SourceConvention",
    "convert_official_orcn_state_dict",
    "reorder_classifier",
]

# DOTA-v1.0 labels 0..14 of BboxToolkit (OBBDetection, RSP checkpoints).
BBOXTOOLKIT_DOTA1_0_CLASSES: tuple[str, ...] = (
    "large-vehicle",
    "swimming-pool",
    "helicopter",
    "bridge",
    "plane",
    "ship",
    "soccer-ball-field",
    "basketball-court",
    "ground-track-field",
    "small-vehicle",
    "baseball-diamond",
    "tennis-court",
    "roundabout",
    "storage-tank",
    "harbor",
)

SourceConvention = Literal["obbdetection", "le90"]

_HEAD_RENAMES = (
    (re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$"), r"neck.\1.\2.\3"),
    (re.compile(r"^rpn_head\.(rpn_conv|rpn_cls|rpn_reg)\.(weight|bias)$"), r"rpn_head.\1.\2"),
    (
        re.compile(r"^roi_head\.bbox_head\.(fc_cls|fc_reg|shared_fcs\.[01])\.(weight|bias)$"),
        r"bbox_head.\1.\2",
    ),
)
_OUT_NORM = re.compile(r"^norm([0-3])\.(weight|bias)$")


def _rename_head(key: str) -> str | None:
    for pattern, repl in _HEAD_RENAMES:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return None


def _backbone_family(model: nn.Module | None) -> str | None:
    backbone = getattr(model, "backbone", None)
    return getattr(backbone, "weights_family", None)


def _describe(state: Mapping[str, Tensor]) -> str:
    """A short guess at what kind of checkpoint ``state`` is, for error messages."""
    keys = list(state)
    if any(k.startswith("roi_head.mask_head") for k in keys):
        return "this looks like a Mask R-CNN-style checkpoint (mask head)"
    if any(re.match(r"roi_head\.bbox_head\.\d+\.", k) for k in keys):
        return "this looks like a multi-stage R-CNN checkpoint (RoI Transformer / Cascade: numbered heads)"
    if any(k.startswith("bbox_head.") for k in keys):
        return "this looks like a one-stage detector checkpoint (RetinaNet / S2ANet: a top-level bbox_head)"
    if any(k.startswith("decode_head.") for k in keys):
        return "this looks like a segmentation checkpoint (decode_head)"
    if not any(k.startswith(("rpn_head.", "roi_head.")) for k in keys):
        return "this checkpoint has no detector heads (a backbone or classification checkpoint?)"
    return "this checkpoint does not match Oriented R-CNN"


def _check_head_shapes(state: Mapping[str, Tensor], model: nn.Module | None) -> None:
    """Tells apart other two-stage detectors and other class counts by the head shapes."""
    if not any(k.startswith(("rpn_head.", "roi_head.")) for k in state):
        if model is not None:
            raise ValueError(
                f"{_describe(state)}; expected Oriented R-CNN keys (rpn_head.*, roi_head.bbox_head.*). "
                "Load backbone-only weights into model.backbone instead"
            )
        return
    rpn_reg = state.get("rpn_head.rpn_reg.weight")
    rpn_cls = state.get("rpn_head.rpn_cls.weight")
    anchors = (
        rpn_cls.shape[0]
        if rpn_cls is not None
        else getattr(getattr(model, "rpn_head", None), "num_anchors", 3)
    )
    if rpn_reg is not None and rpn_reg.shape[0] != 6 * anchors:
        raise ValueError(
            f"rpn_head.rpn_reg has {rpn_reg.shape[0]} outputs for {anchors} anchors: "
            + (
                "a horizontal RPN (4 deltas per anchor: Faster R-CNN / RoI Transformer)"
                if rpn_reg.shape[0] == 4 * anchors
                else "not an Oriented R-CNN RPN"
            )
            + f"; the oriented RPN has 6 midpoint-offset deltas per anchor ({6 * anchors} outputs)"
        )
    fc_reg = state.get("roi_head.bbox_head.fc_reg.weight")
    if fc_reg is not None and fc_reg.shape[0] != 5:
        raise ValueError(
            f"roi_head.bbox_head.fc_reg has {fc_reg.shape[0]} outputs; Oriented R-CNN regresses 5 "
            "class-agnostic rotated deltas (a class-specific or horizontal-box head is another detector)"
        )
    fc_cls = state.get("roi_head.bbox_head.fc_cls.weight")
    expected = getattr(model, "num_classes", None)
    if fc_cls is not None and expected is not None and fc_cls.shape[0] != expected + 1:
        raise ValueError(
            f"the checkpoint classifies {fc_cls.shape[0] - 1} classes (fc_cls has {fc_cls.shape[0]} outputs, "
            f"background included), the model is built for {expected}; build it with "
            f"num_classes={fc_cls.shape[0] - 1} (DOTA-v1.0: 15, HRSC2016: 1) or drop the fc_cls keys "
            "and load non-strictly to fine-tune"
        )


def reorder_classifier(
    state: Mapping[str, Tensor], source_classes: Sequence[str], classes: Sequence[str], prefix: str = ""
) -> dict[str, Tensor]:
    """``state`` with the class rows of ``{prefix}fc_cls`` reordered from ``source_classes`` to ``classes``.

    ``fc_cls`` has one row per class and the background row last; row ``i`` of the result is the row of
    ``classes[i]`` in the source. Both lists must name the same classes.
    """
    source_classes, classes = list(source_classes), list(classes)
    if sorted(source_classes) != sorted(classes) or len(set(classes)) != len(classes):
        raise ValueError(
            f"cannot reorder the classifier: the checkpoint's classes {source_classes} and the target "
            f"classes {classes} must be the same names without repeats"
        )
    order = [source_classes.index(name) for name in classes] + [len(classes)]  # background last
    out = dict(state)
    for name in (f"{prefix}fc_cls.weight", f"{prefix}fc_cls.bias"):
        if name not in out:
            continue
        if out[name].shape[0] != len(classes) + 1:
            raise ValueError(
                f"{name} has {out[name].shape[0]} rows; {len(classes)} classes need {len(classes) + 1} "
                "(background last)"
            )
        out[name] = out[name][order].clone()
    return out


def convert_official_orcn_state_dict(
    state_dict: Mapping[str, Tensor],
    model: nn.Module | None = None,
    source: SourceConvention = "obbdetection",
    backbone_family: str | None = None,
    source_classes: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Renames an official Oriented R-CNN state dict to :class:`OrientedRCNN` keys (strict load after).

    Args:
        state_dict: the ``state_dict`` entry of the mmcv checkpoint (a ``module.`` prefix is removed).
        model: the detector the result is for; its backbone tells the backbone layout.
        source: ``"obbdetection"`` for OBBDetection / RSP files, ``"le90"`` for mmrotate le90 files.
        backbone_family: ``"vitaev2"``, ``"resnet"`` or ``"swin"``; default: from ``model``.
        source_classes: the checkpoint's class names in its label order (e.g.
            :data:`BBOXTOOLKIT_DOTA1_0_CLASSES`); ``None`` keeps the classifier rows as they are.
        classes: the label order wanted (e.g. rsvit's ``DOTA_V1_0_CLASSES``); given with
            ``source_classes``, the classifier rows are reordered to it.

    Raises:
        KeyError: for head keys outside the official layout, naming them and the kind of checkpoint.
        ValueError: for an unknown ``source``, a backbone family that cannot be told, heads of another
            detector (horizontal RPN, class-specific box regression), no detector heads at all (when
            ``model`` is given), or a class count other than the model's.
    """
    if source not in ("obbdetection", "le90"):
        raise ValueError(f"source must be 'obbdetection' or 'le90', got {source!r}")
    if (source_classes is None) != (classes is None):
        raise ValueError("give both source_classes and classes to reorder the classifier, or neither")
    family = backbone_family or _backbone_family(model)
    if family is None:
        raise ValueError(
            "cannot tell the backbone family; pass backbone_family= ('vitaev2', 'resnet', 'swin')"
        )
    state = {key.removeprefix("module."): value for key, value in state_dict.items()}
    heads = {key: _rename_head(key) for key in state if not key.startswith("backbone.")}
    unknown = sorted(key for key, new in heads.items() if new is None)
    if unknown:
        raise KeyError(
            f"{_describe(state)}: not part of the official Oriented R-CNN layout ({len(unknown)} keys): "
            f"{', '.join(unknown[:8])}"
        )
    _check_head_shapes(state, model)
    out = {new: state[key] for key, new in heads.items() if new is not None}
    backbone: dict[str, Tensor] = {}
    for key in (k for k in state if k.startswith("backbone.")):
        sub = key[len("backbone.") :]
        if family == "swin" and (m := _OUT_NORM.match(sub)):
            out[f"backbone_norms.{m[1]}.{m[2]}"] = state[key]
        else:
            backbone[sub] = state[key]
    if source == "obbdetection":
        for name in ("bbox_head.fc_reg.weight", "bbox_head.fc_reg.bias"):
            if name in out:
                flipped = out[name].clone()
                flipped[4] = -flipped[4]
                out[name] = flipped
    if source_classes is not None and classes is not None:
        out = reorder_classifier(out, source_classes, classes, prefix="bbox_head.")
    network = getattr(getattr(model, "backbone", None), "model", None)
    converted = convert_state_dict(backbone, family, network) if backbone else {}
    prefix = "backbone.model." if model is None or network is not None else "backbone."
    return {**{prefix + k: v for k, v in converted.items()}, **out}


def negate_angle(boxes: Tensor) -> Tensor:
    """Boxes ``(..., 5)`` with the angle negated: OBBDetection <-> le90 (w, h and centre unchanged)."""
    return boxes * torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0], dtype=boxes.dtype, device=boxes.device)
