"""Official Oriented R-CNN checkpoint layouts load strictly into the full-size detectors.

The detectors are built on the ``meta`` device (no memory for weights) and the checkpoints are zero
broadcast views shaped like the key manifests, so a strict load checks every key and shape.
"""

from __future__ import annotations

import pytest
import torch

from manifests import manifest_state_dict
from rsvit.models.detection import build_oriented_rcnn
from rsvit.models.detection.convert import convert_official_orcn_state_dict

LAYOUTS = [
    ("rsp_orcn_vitaev2_s_dota", "vitaev2_s", "obbdetection"),
    ("obbdet_orcn_r50_fpn_dota", "resnet50", "obbdetection"),
    ("mmrotate_orcn_r50_le90_dota", "resnet50", "le90"),
    ("rsp_orcn_swin_t_dota", "swin_t", "obbdetection"),
]


@pytest.mark.parametrize(("manifest", "backbone", "source"), LAYOUTS)
def test_official_layout_loads_strictly(reference_dir, manifest: str, backbone: str, source: str) -> None:
    with torch.device("meta"):
        model = build_oriented_rcnn(backbone, num_classes=15)
    official = manifest_state_dict(reference_dir, manifest, fill="view")
    converted = convert_official_orcn_state_dict(official, model, source=source)
    target = model.state_dict()
    assert sorted(converted) == sorted(target)
    assert all(tuple(converted[k].shape) == tuple(target[k].shape) for k in target)
    model.load_state_dict(converted, strict=True, assign=True)


def test_angle_row_is_negated_only_for_obbdetection_sources() -> None:
    reg_w, reg_b = torch.randn(5, 8), torch.randn(5)
    official = {"roi_head.bbox_head.fc_reg.weight": reg_w, "roi_head.bbox_head.fc_reg.bias": reg_b}
    obb = convert_official_orcn_state_dict(official, backbone_family="resnet")
    le90 = convert_official_orcn_state_dict(official, backbone_family="resnet", source="le90")
    assert torch.equal(le90["bbox_head.fc_reg.weight"], reg_w)
    assert torch.equal(obb["bbox_head.fc_reg.weight"][:4], reg_w[:4])
    assert torch.equal(obb["bbox_head.fc_reg.weight"][4], -reg_w[4])
    assert torch.equal(obb["bbox_head.fc_reg.bias"][4], -reg_b[4])
    assert torch.equal(official["roi_head.bbox_head.fc_reg.weight"], reg_w)  # input untouched


def test_unknown_keys_and_sources_are_rejected() -> None:
    with pytest.raises(KeyError, match=r"roi_head\.mask_head"):
        convert_official_orcn_state_dict({"roi_head.mask_head.w": torch.zeros(1)}, backbone_family="resnet")
    with pytest.raises(ValueError, match="source"):
        convert_official_orcn_state_dict({}, backbone_family="resnet", source="le135")
    with pytest.raises(ValueError, match="backbone_family"):
        convert_official_orcn_state_dict({})
