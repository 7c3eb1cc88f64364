"""The automatic mask generator against the official ``SamAutomaticMaskGenerator`` (runs A and B)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvit.models.promptable import Sam
from rsvit.models.promptable.automatic import SamAutomaticMaskGenerator
from rsvit.models.promptable.crops import build_all_layer_point_grids, generate_crop_boxes


def _xyxy_to_xywh(box: list) -> list:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


@pytest.fixture(scope="module", params=["A", "B"])
def amg_run(request, sam_tiny: Sam, sam_official_config: dict, sam_amg_io: dict) -> tuple:
    name = request.param
    settings = sam_official_config["amg_runs"][name]
    generator = SamAutomaticMaskGenerator(sam_tiny, **settings)
    trace: list = []
    records = generator.generate(sam_amg_io["image_u8"].numpy(), trace=trace)
    return name, settings, records, trace


def test_grids_and_crop_boxes_match_official(sam_official_config: dict, sam_amg_io: dict) -> None:
    for name, s in sam_official_config["amg_runs"].items():
        grids = build_all_layer_point_grids(
            s["points_per_side"], s["crop_n_layers"], s["crop_n_points_downscale_factor"]
        )
        for layer, grid in enumerate(grids):
            assert np.array_equal(grid, sam_amg_io[f"run{name}/point_grid_layer{layer}"].numpy())
        boxes, layers = generate_crop_boxes((200, 300), s["crop_n_layers"], s["crop_overlap_ratio"])
        assert boxes == sam_amg_io[f"run{name}/crop_boxes_xyxy"].tolist()
        assert layers == sam_amg_io[f"run{name}/crop_layer_idxs"].tolist()


def test_filter_trace_matches_official(amg_run: tuple, sam_official_config: dict) -> None:
    name, _, _, trace = amg_run
    expected = sam_official_config["amg_filter_trace"][f"run{name}"]
    assert [list(step) for step in trace] == [list(step) for step in expected]


def test_records_match_official(amg_run: tuple, sam_amg_io: dict) -> None:
    name, _, records, _ = amg_run
    io = {k.split("/", 1)[1]: v for k, v in sam_amg_io.items() if k.startswith(f"run{name}/")}
    assert len(records) == len(io["masks"])
    assert [r["bbox"] for r in records] == io["bbox_xywh"].tolist()
    assert [r["point_coords"][0] for r in records] == io["point_coords"].tolist()
    assert [r["crop_box"] for r in records] == io["crop_box_xywh"].tolist()
    areas = torch.tensor([r["area"] for r in records])
    assert (areas - io["area"]).abs().max().item() <= 2
    iou = torch.tensor([r["predicted_iou"] for r in records])
    assert (iou - io["predicted_iou"]).abs().max().item() <= 5e-6
    stability = torch.tensor([r["stability_score"] for r in records])
    assert (stability - io["stability_score"]).abs().max().item() <= 1e-4
    masks = torch.from_numpy(np.stack([r["segmentation"] for r in records]))
    assert masks.dtype == torch.bool
    assert (masks != io["masks"]).float().mean().item() <= 1e-5


def test_rle_output_mode(sam_tiny: Sam, sam_official_config: dict, sam_amg_io: dict) -> None:
    settings = dict(sam_official_config["amg_runs"]["A"], output_mode="uncompressed_rle")
    records = SamAutomaticMaskGenerator(sam_tiny, **settings).generate(sam_amg_io["image_u8"].numpy())
    rle = records[0]["segmentation"]
    assert rle["size"] == [200, 300]
    assert sum(rle["counts"]) == 200 * 300
    assert sum(rle["counts"][1::2]) == records[0]["area"]


def test_bad_settings_are_named(sam_tiny: Sam) -> None:
    with pytest.raises(ValueError, match="output_mode"):
        SamAutomaticMaskGenerator(sam_tiny, output_mode="coco_rle")
    with pytest.raises(ValueError, match="point grids"):
        SamAutomaticMaskGenerator(
            sam_tiny, points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=1
        )
