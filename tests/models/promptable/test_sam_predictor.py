"""Preprocessing, prompt transforms and the predictor against the official ``SamPredictor`` outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvit.models.promptable import Sam
from rsvit.models.promptable.predictor import SamPredictor
from rsvit.models.promptable.transforms import ResizeLongestSide, preprocess_shape

CASES = ("point1", "points_fg_bg", "box", "box_points", "mask_prompt", "mask_only", "no_prompt")


def _max_abs(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)).double(), torch.as_tensor(np.asarray(b)).double()
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def assert_masks_close(ours: torch.Tensor, logits: torch.Tensor, expected: torch.Tensor) -> None:
    """README rule: at most 1e-5 of the pixels differ, and only where our logit is within 1e-3 of 0."""
    ours, expected = torch.as_tensor(ours), torch.as_tensor(expected)
    assert ours.shape == expected.shape
    diff = ours != expected
    assert diff.float().mean().item() <= 1e-5
    assert bool((torch.as_tensor(logits)[diff].abs() <= 1e-3).all())


@pytest.fixture(scope="module")
def predictor(sam_tiny: Sam, sam_io: dict) -> SamPredictor:
    pred = SamPredictor(sam_tiny)
    pred.set_image(sam_io["image_u8"].numpy())
    return pred


def test_preprocess_shape_rounds_half_up() -> None:
    # int(x + 0.5): 3.5 -> 4 (floor gives 3), 2.5 -> 3 (Python's round() gives 2)
    assert preprocess_shape(6, 3, 1024) == (1024, 512)
    assert preprocess_shape(32, 7, 16) == (16, 4)
    assert preprocess_shape(32, 5, 16) == (16, 3)  # 2.5 -> 3, Python round() gives 2


def test_resize_and_preprocess_match_official(sam_tiny: Sam, sam_io: dict) -> None:
    transform = ResizeLongestSide(sam_tiny.img_size)
    resized = transform.apply_image(sam_io["image_u8"].numpy())
    assert np.array_equal(resized, sam_io["image_resized_u8"].numpy())
    padded = sam_tiny.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None])
    assert _max_abs(padded, sam_io["input_image"]) <= 1e-6


def test_predictor_state(predictor: SamPredictor, sam_io: dict) -> None:
    assert predictor.original_size == tuple(sam_io["original_size"].tolist())
    assert predictor.input_size == tuple(sam_io["input_size"].tolist())
    assert _max_abs(predictor.get_image_embedding(), sam_io["image_embedding"]) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_prompt_transforms_match_official(predictor: SamPredictor, sam_io: dict, case: str) -> None:
    size = predictor.original_size
    if f"{case}/point_coords" in sam_io:
        coords = predictor.transform.apply_coords(sam_io[f"{case}/point_coords"].numpy(), size)
        assert np.array_equal(coords.astype(np.float32), sam_io[f"{case}/point_coords_input"][0].numpy())
    if f"{case}/box" in sam_io:
        box = predictor.transform.apply_boxes(sam_io[f"{case}/box"].numpy(), size)
        assert np.array_equal(box.astype(np.float32), sam_io[f"{case}/box_input"].numpy())


def _predict_kwargs(io: dict, case: str) -> dict:
    kwargs = {}
    if f"{case}/point_coords" in io:
        kwargs["point_coords"] = io[f"{case}/point_coords"].numpy()
        kwargs["point_labels"] = io[f"{case}/point_labels"].numpy()
    if f"{case}/box" in io:
        kwargs["box"] = io[f"{case}/box"].numpy()
    if f"{case}/mask_input" in io:
        kwargs["mask_input"] = io[f"{case}/mask_input"].numpy()
    return kwargs


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("multimask", [True, False], ids=["mm1", "mm0"])
def test_predict_matches_official(predictor: SamPredictor, sam_io: dict, case: str, multimask: bool) -> None:
    tag = f"{case}/mm{int(multimask)}"
    kwargs = _predict_kwargs(sam_io, case)
    masks, iou, low_res = predictor.predict(**kwargs, multimask_output=multimask)
    logits, _, _ = predictor.predict(**kwargs, multimask_output=multimask, return_logits=True)
    assert masks.dtype == np.bool_
    assert _max_abs(low_res, sam_io[f"{tag}/low_res_logits"]) <= 2e-4
    assert _max_abs(iou, sam_io[f"{tag}/iou_predictions"]) <= 5e-6
    assert_masks_close(masks, logits, sam_io[f"{tag}/masks"])
    if f"{tag}/logits_fullres" in sam_io:
        assert _max_abs(logits, sam_io[f"{tag}/logits_fullres"]) <= 2e-4


@pytest.mark.parametrize("multimask", [True, False], ids=["mm1", "mm0"])
def test_batched_boxes_match_official(predictor: SamPredictor, sam_io: dict, multimask: bool) -> None:
    tag = f"boxes_batch/mm{int(multimask)}"
    boxes = predictor.transform.apply_boxes_torch(sam_io["boxes_batch/boxes"], predictor.original_size)
    assert torch.equal(boxes, sam_io["boxes_batch/boxes_input"])
    masks, iou, low_res = predictor.predict_torch(boxes=boxes, multimask_output=multimask)
    logits, _, _ = predictor.predict_torch(boxes=boxes, multimask_output=multimask, return_logits=True)
    assert _max_abs(low_res, sam_io[f"{tag}/low_res_logits"]) <= 2e-4
    assert _max_abs(iou, sam_io[f"{tag}/iou_predictions"]) <= 5e-6
    assert_masks_close(masks, logits, sam_io[f"{tag}/masks"])


def test_predict_needs_an_image(sam_tiny: Sam) -> None:
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(sam_tiny).predict(point_coords=np.zeros((1, 2)), point_labels=np.ones(1))


@pytest.mark.parametrize("box", [[10, 10, 10, 40], [30, 10, 20, 40]])
def test_degenerate_boxes_are_rejected(predictor: SamPredictor, box: list[int]) -> None:
    with pytest.raises(ValueError, match="zero area or swapped"):
        predictor.predict(box=np.array(box))


def test_labels_must_match_points(predictor: SamPredictor) -> None:
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(point_coords=np.zeros((2, 2)), point_labels=np.ones(3))


def test_mask_input_shape_is_checked(predictor: SamPredictor) -> None:
    with pytest.raises(ValueError, match=r"mask_input must be \(1, 44, 44\)"):
        predictor.predict(mask_input=np.zeros((1, 40, 40), dtype=np.float32))


def test_band_by_band_resize_equals_the_rgb_resize(sam_io: dict) -> None:
    image = sam_io["image_u8"].numpy()
    transform = ResizeLongestSide(176)
    four = transform.apply_image(np.concatenate([image, image[..., :1]], axis=-1))
    assert four.shape == (117, 176, 4)
    assert np.array_equal(four[..., :3], sam_io["image_resized_u8"].numpy())
    assert np.array_equal(four[..., 3], four[..., 0])


def test_bgr_input_gives_the_rgb_embedding(sam_tiny: Sam, sam_io: dict) -> None:
    pred = SamPredictor(sam_tiny)
    pred.set_image(sam_io["image_u8"].numpy()[..., ::-1], image_format="BGR")
    assert _max_abs(pred.get_image_embedding(), sam_io["image_embedding"]) <= 1e-5


def test_bf16_encoder_gives_a_float32_embedding_near_fp32(sam_tiny: Sam, sam_io: dict) -> None:
    predictor = SamPredictor(sam_tiny, encoder_dtype=torch.bfloat16)
    predictor.set_image(sam_io["image_u8"].numpy())
    embedding = predictor.get_image_embedding()
    assert embedding.dtype == torch.float32
    error = (embedding - sam_io["image_embedding"]).abs().max().item()
    assert 0 < error < 0.25  # bf16 rounding shows, but the embedding is the same one
    with pytest.raises(ValueError, match="encoder_dtype"):
        SamPredictor(sam_tiny, encoder_dtype=torch.int8)
