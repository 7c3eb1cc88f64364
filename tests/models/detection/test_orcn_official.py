"""Oriented R-CNN against the official pipeline on ``fixtures/orcn_tiny_*``, stage by stage.

Each stage starts from the stored official inputs of that stage, so a failure points at one module.
Tolerances are those the reference README suggests (features 1e-4, scores 2e-5, boxes 2e-3 px and
1e-4 rad); discrete decisions (top-k, NMS keep lists, RoI levels, labels) must match exactly.
Official boxes are in OBBDetection's angle convention; rsvit's are le90 (angle negated).
"""

from __future__ import annotations

import pytest
import torch
from orcn_fixture import build_tiny_orcn, negate_angle
from safetensors.torch import load_file

from rsvit.models.detection import build_oriented_rcnn
from rsvit.models.detection.roi_head import enlarge_rois, map_roi_levels
from rsvit.ops import obb_to_hbox, obb_to_poly

FEAT = {"atol": 1e-4, "rtol": 1e-5}
SCORE = {"atol": 2e-5, "rtol": 0}
IMAGES = ("a", "b")
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tiny(reference_dir):
    fixtures = reference_dir / "fixtures"
    model, config = build_tiny_orcn(fixtures)
    return model, config, load_file(fixtures / "orcn_tiny_io.safetensors")


def assert_boxes_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    """le90 boxes against official ones: 2e-3 px on centre and size, 1e-4 rad on the angle."""
    ref = negate_angle(ref)
    torch.testing.assert_close(got[:, :4], ref[:, :4], atol=2e-3, rtol=0)
    torch.testing.assert_close(got[:, 4], ref[:, 4], atol=1e-4, rtol=0)


@pytest.mark.parametrize("image", IMAGES)
def test_backbone_and_fpn(tiny, image: str) -> None:
    model, _, io = tiny
    with torch.no_grad():
        feats = model.backbone(io[f"{image}/input"])
        pyramid = model.neck(feats)
    for i, f in enumerate(feats):
        torch.testing.assert_close(f, io[f"{image}/backbone_feat{i}"], **FEAT)
    assert len(pyramid) == 5
    for i, p in enumerate(pyramid):
        torch.testing.assert_close(p, io[f"{image}/fpn_p{i + 2}"], **FEAT)


@pytest.mark.parametrize("image", IMAGES)
def test_rpn_head_maps(tiny, image: str) -> None:
    model, _, io = tiny
    with torch.no_grad():
        logits, deltas = model.rpn_head([io[f"{image}/fpn_p{i}"] for i in range(2, 7)])
    for i in range(5):
        torch.testing.assert_close(logits[i], io[f"{image}/rpn_cls_p{i + 2}"], **FEAT)
        torch.testing.assert_close(deltas[i], io[f"{image}/rpn_reg_p{i + 2}"], **FEAT)


def test_anchors(tiny) -> None:
    model, _, io = tiny
    gen = model.anchor_generator
    base = torch.stack([gen.base_anchors(level) for level in range(5)])
    torch.testing.assert_close(base, io["a/base_anchors"], atol=1e-4, rtol=0)
    p4 = io["a/fpn_p4"]
    torch.testing.assert_close(
        gen.grid_anchors(2, tuple(p4.shape[-2:])), io["a/anchors_p4"], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("image", IMAGES)
def test_rpn_candidates_and_decoding(tiny, image: str) -> None:
    model, _, io = tiny
    logits = [io[f"{image}/rpn_cls_p{i}"] for i in range(2, 7)]
    deltas = [io[f"{image}/rpn_reg_p{i}"] for i in range(2, 7)]
    anchors = model.anchor_generator([tuple(x.shape[-2:]) for x in logits])
    cand = model.rpn_head.select_candidates(logits, deltas, anchors)
    assert torch.equal(cand.levels, io[f"{image}/rpn_pre_nms_level"])
    torch.testing.assert_close(cand.anchors, io[f"{image}/rpn_pre_nms_anchors"], atol=1e-4, rtol=0)
    torch.testing.assert_close(cand.deltas, io[f"{image}/rpn_pre_nms_deltas"], atol=1e-6, rtol=0)
    torch.testing.assert_close(cand.scores, io[f"{image}/rpn_pre_nms_scores"], **SCORE)
    # Decoding, from the stored official decoder inputs.
    boxes = model.rpn_head.coder.decode(io[f"{image}/rpn_pre_nms_anchors"], io[f"{image}/rpn_pre_nms_deltas"])
    assert_boxes_close(boxes, io[f"{image}/rpn_pre_nms_obb"])
    torch.testing.assert_close(obb_to_hbox(boxes), io[f"{image}/rpn_pre_nms_hbb"], atol=2e-3, rtol=0)


@pytest.mark.parametrize("image", IMAGES)
def test_proposal_nms(tiny, image: str) -> None:
    model, config, io = tiny
    boxes = negate_angle(io[f"{image}/rpn_pre_nms_obb"])
    keep = model.rpn_head.proposal_nms(
        boxes, io[f"{image}/rpn_pre_nms_scores"], io[f"{image}/rpn_pre_nms_level"]
    )
    assert torch.equal(keep, io[f"{image}/rpn_nms_keep"])
    # End of the RPN from its raw maps: the first nms_post survivors.
    logits = [io[f"{image}/rpn_cls_p{i}"] for i in range(2, 7)]
    deltas = [io[f"{image}/rpn_reg_p{i}"] for i in range(2, 7)]
    anchors = model.anchor_generator([tuple(x.shape[-2:]) for x in logits])
    props, scores = model.rpn_head.proposals_single(logits, deltas, anchors)
    ref = io[f"{image}/proposals"]
    assert props.shape[0] == config["test_cfg"]["rpn"]["nms_post"] == ref.shape[0]
    assert_boxes_close(props, ref[:, :5])
    torch.testing.assert_close(props, io[f"{image}/proposals_le90"], atol=2e-3, rtol=0)
    torch.testing.assert_close(scores, ref[:, 5], **SCORE)


@pytest.mark.parametrize("image", IMAGES)
def test_roi_enlargement_levels_and_features(tiny, image: str) -> None:
    model, _, io = tiny
    props = io[f"{image}/proposals_le90"]
    rois = torch.cat([torch.zeros_like(props[:, :1]), props], dim=1)
    big = enlarge_rois(rois)
    ref = io[f"{image}/rois_extended"]
    torch.testing.assert_close(big, negate_angle(ref, column=5), atol=2e-3, rtol=0)
    assert torch.equal(map_roi_levels(big), io[f"{image}/roi_levels"])
    pyramid = [io[f"{image}/fpn_p{i}"] for i in range(2, 7)]
    with torch.no_grad():
        feats = model.roi_extractor(pyramid, rois)
    torch.testing.assert_close(feats[:16], io[f"{image}/roi_feats_first16"], **FEAT)


@pytest.mark.parametrize("image", IMAGES)
def test_bbox_head_outputs(tiny, image: str) -> None:
    model, _, io = tiny
    pyramid = [io[f"{image}/fpn_p{i}"] for i in range(2, 7)]
    with torch.no_grad():
        logits, deltas = model.roi_forward(pyramid, [io[f"{image}/proposals_le90"]])
    torch.testing.assert_close(logits, io[f"{image}/cls_score"], **FEAT)
    # The converter negated the dtheta row: le90 deltas are the official ones with dtheta negated.
    torch.testing.assert_close(deltas, negate_angle(io[f"{image}/bbox_pred"]), **FEAT)


@pytest.mark.parametrize("image", IMAGES)
def test_rcnn_postprocessing(tiny, image: str) -> None:
    model, _, io = tiny
    head = model.bbox_head
    props = io[f"{image}/proposals_le90"]
    deltas = negate_angle(io[f"{image}/bbox_pred"])
    logits = io[f"{image}/cls_score"]
    assert_boxes_close(head.decode(props, deltas), io[f"{image}/rcnn_decoded_obb"])
    torch.testing.assert_close(logits.softmax(-1), io[f"{image}/rcnn_scores_softmax"], **SCORE)
    boxes, scores, labels = head.postprocess(props, logits, deltas)
    assert torch.equal(labels, io[f"{image}/det_labels"])
    torch.testing.assert_close(scores, io[f"{image}/det_scores"], **SCORE)
    assert_boxes_close(boxes, io[f"{image}/det_obb"])
    assert float(corner_distance(obb_to_poly(boxes), io[f"{image}/det_poly"]).max()) <= 2e-3


def corner_distance(polys: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Largest corner distance per box after the best cyclic matching (both lists run clockwise)."""
    p, r = polys.reshape(-1, 4, 2), ref.reshape(-1, 4, 2)
    return torch.stack([(p.roll(k, dims=1) - r).norm(dim=-1).amax(-1) for k in range(4)], -1).amin(-1)


@pytest.mark.parametrize("image", IMAGES)
def test_end_to_end_from_pixels(tiny, image: str) -> None:
    model, _, io = tiny
    rgb = io[f"{image}/image_rgb_u8"].permute(2, 0, 1).unsqueeze(0).float()
    x = (rgb - MEAN) * (1 / STD)
    h, w = rgb.shape[-2:]
    torch.testing.assert_close(x, io[f"{image}/input"][..., :h, :w], atol=1e-6, rtol=0)
    with torch.no_grad():
        (det,) = model(x)  # unpadded: the detector pads to /32 itself
    assert torch.equal(det["labels"], io[f"{image}/det_labels"])
    torch.testing.assert_close(det["scores"], io[f"{image}/det_scores"], **SCORE)
    assert_boxes_close(det["boxes"], io[f"{image}/det_obb"])
    torch.testing.assert_close(det["boxes"], io[f"{image}/det_obb_le90"], atol=2e-3, rtol=0)


def test_batch_of_two_gives_the_single_image_detections(tiny) -> None:
    model, _, io = tiny
    x = io["a/input"]
    with torch.no_grad():
        dets = model(torch.cat([x, x.flip(-1)]))
        (flipped,) = model(x.flip(-1))
    assert torch.equal(dets[0]["labels"], io["a/det_labels"])
    assert_boxes_close(dets[0]["boxes"], io["a/det_obb"])
    assert torch.equal(dets[1]["labels"], flipped["labels"])
    torch.testing.assert_close(dets[1]["boxes"], flipped["boxes"], atol=2e-3, rtol=0)


def test_mmrotate_pipeline_pools_unenlarged_rois_and_clips_centres(tiny) -> None:
    model, _, io = tiny
    mm = build_oriented_rcnn(model.backbone, 15, 32, 64, pipeline="mmrotate")
    assert (mm.roi_extractor.w_factor, mm.roi_extractor.h_factor) == (1.0, 1.0)
    props = io["a/proposals_le90"]
    deltas = negate_angle(io["a/bbox_pred"])
    decoded = model.bbox_head.decode(props, deltas)
    h, w = io["a/image_rgb_u8"].shape[:2]
    outside = (decoded[:, 0] < 0) | (decoded[:, 0] > w - 1) | (decoded[:, 1] < 0) | (decoded[:, 1] > h - 1)
    assert int(outside.sum()) > 0  # the official (OBBDetection) pipeline keeps such boxes
    boxes, _, _ = mm.bbox_head.postprocess(props, io["a/cls_score"], deltas, (h, w))
    assert bool(
        ((boxes[:, 0] >= 0) & (boxes[:, 0] <= w - 1) & (boxes[:, 1] >= 0) & (boxes[:, 1] <= h - 1)).all()
    )
    with pytest.raises(ValueError, match="pipeline"):
        build_oriented_rcnn(model.backbone, 15, 32, 64, pipeline="le90")
