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


def _random_heads(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "roi_head.bbox_head.fc_cls.weight": torch.randn(num_classes + 1, 8, generator=g),
        "roi_head.bbox_head.fc_cls.bias": torch.randn(num_classes + 1, generator=g),
        "roi_head.bbox_head.fc_reg.weight": torch.randn(5, 8, generator=g),
        "roi_head.bbox_head.fc_reg.bias": torch.randn(5, generator=g),
    }


def test_bboxtoolkit_class_order_is_reordered_to_ours() -> None:
    from rsvit.models.detection.convert import BBOXTOOLKIT_DOTA1_0_CLASSES
    from rsvit.structures.class_names import DOTA_V1_0_CLASSES
    from rsvit.weights.convert import convert_state_dict

    official = _random_heads(15)
    w, b = official["roi_head.bbox_head.fc_cls.weight"], official["roi_head.bbox_head.fc_cls.bias"]
    kept = convert_official_orcn_state_dict(official, backbone_family="resnet")
    assert torch.equal(kept["bbox_head.fc_cls.weight"], w)  # default: rows as they are
    with torch.device("meta"):
        dota, one_class = build_oriented_rcnn("resnet18", 15), build_oriented_rcnn("resnet18", 1)
    out = convert_state_dict(official, "orcn", dota)  # the weights family reorders DOTA-v1.0 checkpoints
    for i, name in enumerate(DOTA_V1_0_CLASSES):
        src = BBOXTOOLKIT_DOTA1_0_CLASSES.index(name)
        assert torch.equal(out["bbox_head.fc_cls.weight"][i], w[src]), name
        assert torch.equal(out["bbox_head.fc_cls.bias"][i], b[src]), name
    assert torch.equal(out["bbox_head.fc_cls.weight"][15], w[15])  # background stays last
    assert not torch.equal(out["bbox_head.fc_cls.weight"], w)
    # The class a feature scores highest for keeps its name through the reorder.
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    theirs_names, our_names = (*BBOXTOOLKIT_DOTA1_0_CLASSES, "background"), (*DOTA_V1_0_CLASSES, "background")
    official_names = [theirs_names[i] for i in (x @ w.T + b).argmax(1)]
    ours = (x @ out["bbox_head.fc_cls.weight"].T + out["bbox_head.fc_cls.bias"]).argmax(1)
    assert [our_names[i] for i in ours] == official_names
    assert len(set(official_names)) > 3
    # mmrotate files are already in the devkit order; one-class (HRSC) files have nothing to reorder.
    mm = convert_state_dict(official, "orcn_mmrotate", dota)
    assert torch.equal(mm["bbox_head.fc_cls.weight"], w)
    hrsc = _random_heads(1)
    assert torch.equal(
        convert_state_dict(hrsc, "orcn", one_class)["bbox_head.fc_cls.weight"],
        hrsc["roi_head.bbox_head.fc_cls.weight"],
    )


def test_class_reorder_errors() -> None:
    from rsvit.models.detection.convert import reorder_classifier

    heads = _random_heads(2)
    with pytest.raises(ValueError, match="both source_classes and classes"):
        convert_official_orcn_state_dict(heads, backbone_family="resnet", source_classes=["a", "b"])
    with pytest.raises(ValueError, match="same names"):
        convert_official_orcn_state_dict(
            heads, backbone_family="resnet", source_classes=["a", "b"], classes=["a", "c"]
        )
    with pytest.raises(ValueError, match="3 classes need 4"):
        reorder_classifier(heads, ["a", "b", "c"], ["c", "b", "a"], prefix="roi_head.bbox_head.")
    swapped = reorder_classifier(heads, ["a", "b"], ["b", "a"], prefix="roi_head.bbox_head.")
    w = heads["roi_head.bbox_head.fc_cls.weight"]
    assert torch.equal(swapped["roi_head.bbox_head.fc_cls.weight"], w[[1, 0, 2]])
