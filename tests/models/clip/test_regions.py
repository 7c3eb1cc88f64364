"""Region crops and CLIP region scoring against independent computations; selection; bad text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_clip import seeded_tiny_clip

from rsvit.models.clip import TEMPLATE_SETS, PromptTooLongError, wrap_model
from rsvit.models.clip.regions import (
    CLIP_FILL,
    RegionScorer,
    check_text,
    region_crop,
    select_regions,
    square_box,
)

TEMPLATES = ("a satellite photo of {}.", "an aerial image of the {}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    name, model = seeded_tiny_clip(tmp_path_factory.mktemp("cfg"), seed=3)
    return wrap_model(model, name)


def _image(height: int = 60, width: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_square_box_contains_the_box_with_the_margin_and_is_centred() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        x0, y0 = rng.integers(-5, 50, 2)
        w, h = rng.integers(1, 40, 2)
        margin = float(rng.choice([0.0, 0.1, 0.25]))
        left, top, side = square_box((x0, y0, x0 + w - 1, y0 + h - 1), margin)
        assert side >= max(w, h) * (1 + 2 * margin) - 1e-9 and side < max(w, h) * (1 + 2 * margin) + 1
        assert left <= x0 and left + side >= x0 + w and top <= y0 and top + side >= y0 + h
        assert abs((left + side / 2) - (x0 + w / 2)) <= 0.5 and abs((top + side / 2) - (y0 + h / 2)) <= 0.5
    with pytest.raises(ValueError, match="empty"):
        square_box((5, 5, 4, 9))


def test_keep_copies_the_square_and_fills_outside_the_image() -> None:
    image = _image()
    mask = np.zeros(image.shape[:2], bool)
    mask[0:10, 70:80] = True  # top-right corner: the square reaches past the image
    box = (70, 0, 79, 9)
    crop = region_crop(image, mask, box, margin=0.25, background="keep")
    left, top, side = square_box(box, 0.25)
    assert crop.shape == (side, side, 3)
    for r in range(side):
        for c in range(side):
            y, x = top + r, left + c
            expected = image[y, x] if 0 <= y < 60 and 0 <= x < 80 else CLIP_FILL
            np.testing.assert_array_equal(crop[r, c], expected)


def test_grey_and_invalid_pixels_take_the_fill_colour() -> None:
    image = _image(seed=2)
    mask = np.zeros(image.shape[:2], bool)
    mask[20:35, 30:40] = True
    mask[22, 33] = False
    valid = np.ones(image.shape[:2], bool)
    valid[25, 35] = False
    crop = region_crop(image, mask, (30, 20, 39, 34), margin=0.0, background="grey", valid=valid)
    left, top, side = square_box((30, 20, 39, 34), 0.0)
    window = (slice(top, top + side), slice(left, left + side))
    inside = mask[window] & valid[window]
    np.testing.assert_array_equal(crop[inside], image[window][inside])
    assert (crop[~inside] == np.array(CLIP_FILL, np.uint8)).all()
    assert (~inside).sum() > 0 and inside.sum() > 0


def _numpy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian (reflected borders, radius ceil(3 sigma)) in float64."""
    radius = min(math.ceil(3 * sigma), min(image.shape[:2]) - 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[i : i + image.shape[0], :, :] for i, k in enumerate(kernel))
    out = sum(k * rows[:, i : i + image.shape[1], :] for i, k in enumerate(kernel))
    return out


def test_blur_replaces_only_the_outside_by_a_gaussian_of_the_crop() -> None:
    image = _image(seed=4)
    mask = np.zeros(image.shape[:2], bool)
    mask[10:50, 20:60] = True
    box = (20, 10, 59, 49)
    sharp = region_crop(image, mask, box, margin=0.2, background="keep")
    blurred = region_crop(image, mask, box, margin=0.2, background="blur")
    left, top, side = square_box(box, 0.2)
    region = np.zeros((side, side), bool)
    region[10 - top : 50 - top, 20 - left : 60 - left] = True
    np.testing.assert_array_equal(blurred[region], sharp[region])
    expected = _numpy_blur(sharp, 0.05 * side)
    difference = np.abs(blurred[~region].astype(np.float64) - expected[~region])
    assert difference.max() <= 1.0  # rounding of float32 against float64
    assert np.abs(blurred[~region].astype(int) - sharp[~region]).mean() > 10  # noise got smoothed


def test_a_large_square_is_shrunk_to_the_model_input_before_the_background_rule() -> None:
    from PIL import Image

    image = _image(seed=5)
    mask = np.zeros(image.shape[:2], bool)
    mask[5:55, 10:70] = True
    box = (10, 5, 69, 54)
    sharp = region_crop(image, mask, box, margin=0.1, background="keep")
    small = region_crop(image, mask, box, margin=0.1, background="grey", size=32)
    assert sharp.shape[0] > 32 and small.shape == (32, 32, 3)
    resized = np.asarray(Image.fromarray(sharp).resize((32, 32), Image.Resampling.BICUBIC))
    left, top, side = square_box(box, 0.1)
    region = np.zeros((side, side), bool)
    region[5 - top : 55 - top, 10 - left : 70 - left] = True
    inside = np.asarray(Image.fromarray(region).resize((32, 32), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(small[inside], resized[inside])
    assert (small[~inside] == np.array(CLIP_FILL, np.uint8)).all() and (~inside).any()
    np.testing.assert_array_equal(
        region_crop(image, mask, box, margin=0.1, size=side), region_crop(image, mask, box, margin=0.1)
    )  # no larger than the input: untouched


def test_bad_crop_arguments_are_named() -> None:
    image = _image()
    mask = np.zeros(image.shape[:2], bool)
    with pytest.raises(ValueError, match="background"):
        region_crop(image, mask, (0, 0, 5, 5), background="sepia")
    with pytest.raises(ValueError, match="mask shape"):
        region_crop(image, mask[:10], (0, 0, 5, 5))
    with pytest.raises(ValueError, match="uint8"):
        region_crop(image.astype(np.float32), mask, (0, 0, 5, 5))


def _independent_scores(clip, crops, prompts, templates):
    """Each prompt and crop encoded alone in float64; normalise-then-mean; scale 100."""
    rows = []
    for prompt in prompts:
        embeddings = []
        for template in templates:
            with torch.no_grad():
                e = clip.model.encode_text(clip.tokenizer([template.format(prompt)]))[0].double()
            embeddings.append(e / e.norm())
        mean = torch.stack(embeddings).mean(0)
        rows.append(mean / mean.norm())
    text = torch.stack(rows)
    from PIL import Image

    probabilities, cosines = [], []
    for crop in crops:
        with torch.no_grad():
            f = clip.model.encode_image(clip.preprocess(Image.fromarray(crop))[None])[0].double()
        cos = text @ (f / f.norm())
        cosines.append(float(cos[0]))
        probabilities.append(float(torch.softmax(100.0 * cos, 0)[0]))
    return np.array(probabilities), np.array(cosines)


def test_scorer_equals_an_independent_computation(tiny) -> None:
    rng = np.random.default_rng(7)
    crops = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (12, 40, 64, 90, 33)]
    negatives = ("background", "trees", "water")
    scorer = RegionScorer(tiny, "  swimming pool ", templates=TEMPLATES, negatives=negatives, batch_size=2)
    assert scorer.text == "swimming pool" and scorer.prompts == ("swimming pool", *negatives)
    scores = scorer.score(crops)
    probability, cosine = _independent_scores(tiny, crops, scorer.prompts, TEMPLATES)
    np.testing.assert_allclose(scores.probability, probability, atol=1e-5)
    np.testing.assert_allclose(scores.cosine, cosine, atol=1e-5)
    assert scores.probability.std() > 0  # the crops are told apart
    again = RegionScorer(tiny, "swimming pool", templates=TEMPLATES, negatives=negatives, batch_size=5)
    np.testing.assert_allclose(again.score(crops).cosine, scores.cosine, atol=1e-6)
    assert len(scorer.score([])) == 0


def test_negatives_leave_out_the_query_and_repeats_and_templates_default_to_the_preset(tiny) -> None:
    scorer = RegionScorer(tiny, "Water", templates=TEMPLATES, negatives=("water", "road", "Road", " "))
    assert scorer.prompts == ("Water", "road")
    preset = wrap_model(tiny.model, tiny.architecture, preset="skyclip-vit-b-32")
    assert RegionScorer(preset, "road").templates == TEMPLATE_SETS["skyclip"]
    assert RegionScorer(tiny, "road").templates == TEMPLATE_SETS["rs-general"]


def test_logit_scale_choices(tiny) -> None:
    assert RegionScorer(tiny, "road", templates=TEMPLATES).classifier.logit_scale == 100.0
    assert RegionScorer(tiny, "road", templates=TEMPLATES, logit_scale="12.5").classifier.logit_scale == 12.5
    own = RegionScorer(tiny, "road", templates=TEMPLATES, logit_scale="model").classifier.logit_scale
    assert own == pytest.approx(float(tiny.model.logit_scale.detach().exp()))
    with pytest.raises(ValueError, match="'fixed', 'model' or a number"):
        RegionScorer(tiny, "road", logit_scale="big")


def test_empty_and_too_long_text_are_refused(tiny) -> None:
    with pytest.raises(ValueError, match="empty"):
        check_text(tiny.tokenizer, "   ")
    with pytest.raises(PromptTooLongError, match="at most 77"):
        RegionScorer(tiny, " ".join(["house"] * 80))
    with pytest.raises(PromptTooLongError, match="takes 77"):  # fits alone, not inside a template
        RegionScorer(tiny, " ".join(["house"] * 73), templates=("a very large satellite photo of {}",))


def test_selection_by_threshold_and_top_k() -> None:
    values = np.array([0.2, 0.9, 0.5, 0.7, 0.5])
    np.testing.assert_array_equal(select_regions(values), [1, 3, 2, 4, 0])
    np.testing.assert_array_equal(select_regions(values, threshold=0.5), [1, 3, 2, 4])
    np.testing.assert_array_equal(select_regions(values, threshold=0.5, top_k=2), [1, 3])
    np.testing.assert_array_equal(select_regions(values, top_k=10), [1, 3, 2, 4, 0])
    assert len(select_regions(values, threshold=0.95)) == 0
    with pytest.raises(ValueError, match="top_k"):
        select_regions(values, top_k=0)
