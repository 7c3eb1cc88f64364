"""Prompts read from vector features (scribbles, polygons, points) answered by the predictor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine

from rsvit.models.promptable import Sam, SamPredictor
from rsvit.models.promptable.predictor import MASK_PROMPT_LOGIT
from rsvit.structures.prompts import Prompt, pixel_to_map, read_prompts

H, W = 96, 160
TRANSFORM = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 5200000.0)  # 2 m pixels, UTM 14N
CRS = "EPSG:26914"


@pytest.fixture(scope="module")
def synthetic() -> np.ndarray:
    """A dark field with a bright horizontal bar (rows 40-55, columns 20-139)."""
    image = np.full((H, W, 3), 40, dtype=np.uint8)
    image[40:56, 20:140] = (220, 200, 60)
    return image


@pytest.fixture(scope="module")
def predictor(sam_tiny: Sam, synthetic: np.ndarray) -> SamPredictor:
    pred = SamPredictor(sam_tiny)
    pred.set_image(synthetic)
    return pred


def _geo(kind: str, pixels, **props) -> dict:
    coords = pixel_to_map(np.asarray(pixels, dtype=np.float64), TRANSFORM).tolist()
    if kind == "Point":
        coords = coords[0]
    elif kind == "Polygon":
        coords = [coords]
    feature = {"type": "Feature", "geometry": {"type": kind, "coordinates": coords}, "properties": props}
    return {"type": "FeatureCollection", "features": [feature]}


def test_scribble_along_the_bar_gives_points_on_it_and_masks(predictor: SamPredictor) -> None:
    line = [[25.0, 47.0], [80.0, 48.0], [135.0, 47.0]]
    (prompt,) = read_prompts(_geo("LineString", line), TRANSFORM, CRS, (H, W), crs=CRS, scribble_box=True)
    pts = prompt.points
    assert len(pts) == 7 and prompt.labels.tolist() == [1] * 7
    assert np.allclose(pts[[0, -1]], [line[0], line[-1]])
    # every point lies on one of the two segments
    on = np.zeros(len(pts), dtype=bool)
    for (x0, y0), (x1, y1) in itertools.pairwise(line):
        t = np.clip(
            ((pts[:, 0] - x0) * (x1 - x0) + (pts[:, 1] - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2),
            0,
            1,
        )
        d = np.hypot(pts[:, 0] - (x0 + t * (x1 - x0)), pts[:, 1] - (y0 + t * (y1 - y0)))
        on |= d < 1e-6
    assert on.all()
    assert prompt.box is not None and prompt.box[0] < 25 and prompt.box[2] > 135
    masks, iou, low_res = predictor.predict_prompt(prompt)
    assert masks.shape == (1, H, W) and masks.dtype == bool  # several points + box: one mask
    assert iou.shape == (1,) and np.isfinite(iou).all() and np.isfinite(low_res).all()


def test_polygon_mask_prompt_reaches_the_decoder(predictor: SamPredictor) -> None:
    ring = [[20, 40], [139, 40], [139, 55], [20, 55], [20, 40]]
    (prompt,) = read_prompts(_geo("Polygon", ring), TRANSFORM, CRS, (H, W), crs=CRS, polygon_as="mask")
    assert prompt.mask[47, 80] and not prompt.mask[10, 80]
    mask_input = predictor.mask_input_from_mask(prompt.mask)
    g4 = predictor.model.prompt_encoder.mask_input_size
    assert mask_input.shape == (1, *g4)
    assert mask_input.max() == pytest.approx(MASK_PROMPT_LOGIT) and mask_input.min() == -MASK_PROMPT_LOGIT
    with_mask = predictor.predict_prompt(prompt, return_logits=True)[0]
    without = predictor.predict_prompt(Prompt(box=prompt.box), return_logits=True)[0]
    assert with_mask.shape == without.shape == (1, H, W)
    assert np.abs(with_mask - without).max() > 1e-4  # the mask prompt changes the answer


def test_point_prompt_and_empty_prompt(predictor: SamPredictor) -> None:
    (prompt,) = read_prompts(_geo("Point", [[60.0, 47.0]]), TRANSFORM, CRS, (H, W), crs=CRS)
    masks, _, _ = predictor.predict_prompt(prompt)
    assert masks.shape == (3, H, W)  # one point is ambiguous: three candidates
    with pytest.raises(ValueError, match="empty"):
        predictor.predict_prompt(Prompt(prompt_id=7))
    with pytest.raises(ValueError, match="does not match"):
        predictor.mask_input_from_mask(np.zeros((10, 10), dtype=bool))
