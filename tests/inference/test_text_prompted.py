"""Text-prompted segmentation of a real NAIP crop: tiny SAM candidates scored by a seeded tiny CLIP."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_points
from rasterio.windows import Window
from safetensors.torch import save_file

from models.clip.tiny_clip import seeded_tiny_clip, write_tiny_config  # tests/ is on the path
from models.promptable import conftest as sam_fixtures
from raster_crops import write_crop
from rsvit.inference.promptable import RasterSamPredictor, to_uint8
from rsvit.inference.reader import SceneReader
from rsvit.inference.text_prompted import detections_to_geojson, read_boxes, text_segment_raster
from rsvit.models.clip import PromptTooLongError, wrap_model
from rsvit.models.clip.regions import BACKGROUNDS, SCORES, RegionScorer, region_crop
from rsvit.models.clip.zeroshot import AVERAGING_RULES
from rsvit.structures.prompts import Prompt

# the reference's reduced SAM (input 176 pixels), as tests/models/promptable build it
sam_fixture_dir = sam_fixtures.sam_fixture_dir
sam_official_config = sam_fixtures.sam_official_config
sam_official_weights = sam_fixtures.sam_official_weights
sam_tiny_config = sam_fixtures.sam_tiny_config
sam_tiny = sam_fixtures.sam_tiny

NAIP = "geotiff/naip/m_4709963_se_14_1_20200831.tif"
TEMPLATES = ("a satellite photo of {}.", "an aerial image of {}")
NEGATIVES = ("background", "trees", "road")
# a point grid of 2 x 2 per window and no filters: a dozen candidates per window from the tiny SAM
SETTINGS = {"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory):
    name, model = seeded_tiny_clip(tmp_path_factory.mktemp("clip"), seed=11)
    return wrap_model(model, name)


@pytest.fixture(scope="module")
def scene(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300 x 176 crop (4 bands, EPSG:26914) of the real NAIP tile: two SAM windows side by side."""
    path = tmp_path_factory.mktemp("naip") / "scene.tif"
    return write_crop(data_dir / NAIP, path, Window(150, 200, 300, 176), photometric="MINISBLACK")


def _run(sam, clip, scene, out_dir: Path, seen: list | None = None, **kwargs) -> dict:
    options = {
        "vector": out_dir / "matches.geojson",
        "bands": (1, 2, 3),
        "templates": TEMPLATES,
        "negatives": NEGATIVES,
        "progress": False,
        "automatic": SETTINGS,
        **kwargs,
    }
    hook = None if seen is None else (lambda regions, scores: seen.append((regions, scores)))
    return text_segment_raster(
        sam, clip, scene, "swimming pool", out_dir / "matches.tif", on_regions=hook, **options
    )


@pytest.fixture(scope="module")
def everything(sam_tiny, clip, scene, tmp_path_factory):
    """One run keeping every candidate (no threshold): the regions, their scores and the outputs."""
    out_dir = tmp_path_factory.mktemp("all")
    seen: list = []
    summary = _run(sam_tiny, clip, scene, out_dir, seen, threshold=None)
    [(regions, scores)] = seen
    return summary, regions, scores, out_dir


def test_outputs_are_georeferenced_and_polygons_carry_text_score_and_area(everything, scene) -> None:
    summary, regions, scores, out_dir = everything
    assert summary["source"] == "automatic" and summary["windows"] == 2
    assert summary["regions"] == len(regions) == len(scores) >= 8
    assert summary["matches"] == len(regions)  # no threshold
    with rasterio.open(scene) as src, rasterio.open(out_dir / "matches.tif") as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height, dst.count, dst.dtypes[0], dst.nodata) == (300, 176, 1, "uint8", 255)
        assert dst.profile.get("tiled") and dst.overviews(1) is not None  # written as a COG
        values = dst.read(1)
        pixel_area = abs(src.transform.a * src.transform.e)
        left, bottom, right, top = src.bounds
        crs = src.crs
    features = json.loads((out_dir / "matches.geojson").read_text())["features"]
    assert features and len(features) == summary["features"]
    ranks = [f["properties"]["rank"] for f in features]
    assert ranks == sorted(ranks)
    probabilities = [f["properties"]["probability"] for f in features]
    assert probabilities == sorted(probabilities, reverse=True)  # rank 1 = best score
    for f in features:
        p = f["properties"]
        assert p["text"] == "swimming pool" and p["source"] == "automatic"
        assert p["score"] == p["probability"] and 0 <= p["probability"] <= 1 and -1 <= p["cosine"] <= 1
        assert p["value"] == p["rank"] and p["area_px"] == int((values == p["value"]).sum()) > 0
        assert p["area"] == pytest.approx(p["area_px"] * pixel_area)
    painted = {int(v) for v in np.unique(values)} - {0}
    assert painted == {f["properties"]["value"] for f in features}
    lons, lats = warp_points(crs, "EPSG:4326", [left, right], [bottom, top])
    coords = np.array([c for f in features for c in _vertices(f["geometry"])])
    assert (coords[:, 0] >= min(lons) - 1e-4).all() and (coords[:, 0] <= max(lons) + 1e-4).all()
    assert (coords[:, 1] >= min(lats) - 1e-4).all() and (coords[:, 1] <= max(lats) + 1e-4).all()


def _vertices(geometry: dict) -> list:
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [c for polygon in polygons for ring in polygon for c in ring]


def test_scores_equal_the_scorer_on_crops_cut_from_the_whole_image(everything, clip, scene) -> None:
    _, regions, scores, _ = everything
    reader = SceneReader(scene, bands=(1, 2, 3))
    image, _ = reader.read(0, 0, reader.height, reader.width)
    reader.close()
    whole = to_uint8(image)
    scorer = RegionScorer(clip, "swimming pool", templates=TEMPLATES, negatives=NEGATIVES)
    crops = []
    for region in regions:
        mask = np.zeros(whole.shape[:2], bool)
        x0, y0, x1, y1 = region.box
        mask[y0 : y1 + 1, x0 : x1 + 1] = region.mask
        assert region.mask[0].any() and region.mask[:, 0].any()  # the box is tight
        crops.append(region_crop(whole, mask, region.box, margin=0.1, size=scorer.input_size))
    expected = scorer.score(crops)
    np.testing.assert_allclose(scores.probability, expected.probability, atol=1e-6)
    np.testing.assert_allclose(scores.cosine, expected.cosine, atol=1e-6)
    assert scores.cosine.std() > 0


def test_threshold_and_top_k_keep_the_best_regions(everything, sam_tiny, clip, scene, tmp_path) -> None:
    _, _, scores, _ = everything
    cut = float(np.median(scores.cosine))
    summary = _run(sam_tiny, clip, scene, tmp_path / "a", score="cosine", threshold=cut)
    assert summary["matches"] == int((scores.cosine >= cut).sum()) < len(scores)
    kept = [
        f["properties"]["cosine"]
        for f in json.loads((tmp_path / "a/matches.geojson").read_text())["features"]
    ]
    assert min(kept) >= round(cut, 4) - 1e-4
    summary = _run(sam_tiny, clip, scene, tmp_path / "b", threshold=None, top_k=2, mode="binary")
    assert summary["matches"] == 2
    features = json.loads((tmp_path / "b/matches.geojson").read_text())["features"]
    best = sorted(np.round(scores.probability, 4), reverse=True)[:2]
    assert sorted((f["properties"]["probability"] for f in features), reverse=True) == pytest.approx(best)
    with rasterio.open(tmp_path / "b/matches.tif") as dst:
        assert set(np.unique(dst.read(1)).tolist()) == {0, 1}
    summary = _run(sam_tiny, clip, scene, tmp_path / "c", threshold=1.01)
    assert summary["matches"] == 0 and summary["features"] == 0
    with rasterio.open(tmp_path / "c/matches.tif") as dst:
        assert not dst.read(1).any()


def _lonlat(raster: Path, col: float, row: float) -> list[float]:
    with rasterio.open(raster) as src:
        x, y = src.transform @ (col + 0.5, row + 0.5)
        lon, lat = warp_points(src.crs, "EPSG:4326", [x], [y])
    return [lon[0], lat[0]]


def _box_feature(raster: Path, box: tuple, **props) -> dict:
    x0, y0, x1, y1 = box
    ring = [_lonlat(raster, x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


BOXES = ((20, 30, 80, 90), (150, 40, 210, 120), (230, 100, 290, 170))


def test_detector_boxes_become_sam_masks_with_their_labels(sam_tiny, clip, scene, tmp_path) -> None:
    detections = {
        "type": "FeatureCollection",
        "features": [
            _box_feature(scene, box, label="pool", score=0.5 + 0.1 * k) for k, box in enumerate(BOXES)
        ],
    }
    detections["features"][1]["id"] = "det-7"
    seen: list = []
    summary = _run(sam_tiny, clip, scene, tmp_path, seen, boxes=detections, threshold=None)
    assert summary["source"] == "boxes" and summary["candidates"] == len(BOXES)
    [(regions, _)] = seen
    engine = RasterSamPredictor(sam_tiny, SceneReader(scene, bands=(1, 2, 3)))
    assert sorted(str(r.properties["box_id"]) for r in regions) == [
        "0",
        "2",
        "det-7",
    ]  # feature id, else index
    for region in regions:
        k = 1 if region.properties["box_id"] == "det-7" else region.properties["box_id"]
        assert region.properties["detector_label"] == "pool"
        assert region.properties["detector_score"] == pytest.approx(0.5 + 0.1 * k)
        [answer] = engine.predict([Prompt(box=np.array(BOXES[k], float), prompt_id=k)])
        full = np.zeros((176, 300), bool)
        x0, y0, w, h = answer.window
        full[y0 : y0 + h, x0 : x0 + w] = answer.mask
        ours = np.zeros_like(full)
        ours[region.box[1] : region.box[3] + 1, region.box[0] : region.box[2] + 1] = region.mask
        assert (ours != full).mean() < 1e-3  # the same prompt up to reprojection noise
    features = json.loads((tmp_path / "matches.geojson").read_text())["features"]
    assert {f["properties"]["source"] for f in features} == {"boxes"}
    assert all(f["properties"]["detector_label"] == "pool" for f in features)


def test_pixel_detections_round_trip_through_geojson(scene) -> None:
    reader = SceneReader(scene, bands=(1, 2, 3))
    labels, scores = ["pool", "roof", "pool"], [0.9, 0.4, 0.7]
    collection = detections_to_geojson(BOXES, reader.transform, reader.crs, labels=labels, scores=scores)
    assert json.loads(json.dumps(collection)) == collection  # plain JSON
    read = read_boxes(collection, reader)
    assert [d["box_id"] for _, d in read] == [0, 1, 2]
    for (prompt, details), box, label, score in zip(read, BOXES, labels, scores, strict=True):
        np.testing.assert_allclose(prompt.box, box, atol=1e-6)
        assert details["detector_label"] == label and details["detector_score"] == score
    with pytest.raises(ValueError, match="2 labels for 3 boxes"):
        detections_to_geojson(BOXES, reader.transform, reader.crs, labels=labels[:2])
    reader.close()


def test_bad_input_is_named_before_anything_is_written(sam_tiny, clip, scene, tmp_path) -> None:
    out = tmp_path / "m.tif"

    def run(text="swimming pool", **kwargs):
        options = {
            "bands": (1, 2, 3),
            "templates": TEMPLATES,
            "progress": False,
            "automatic": SETTINGS,
            **kwargs,
        }
        return text_segment_raster(sam_tiny, clip, scene, text, out, **options)

    with pytest.raises(ValueError, match="empty"):
        run("  ")
    with pytest.raises(PromptTooLongError, match="at most 77"):
        run(" ".join(["pool"] * 90))
    with pytest.raises(ValueError, match="negative prompts"):
        run(negatives=())
    with pytest.raises(ValueError, match="not a box"):
        run(
            boxes={
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": _lonlat(scene, 10, 10)},
                    }
                ],
            }
        )
    with pytest.raises(ValueError, match="no features"):
        run(boxes={"type": "FeatureCollection", "features": []})
    with pytest.raises(ValueError, match="outside the raster"):
        run(boxes={"type": "FeatureCollection", "features": [_box_feature(scene, (250, 100, 400, 150))]})
    with pytest.raises(ValueError, match="vector CRS must be one of"):
        run(vector=tmp_path / "m.geojson", vector_crs="EPSG:3857")
    with pytest.raises(ValueError, match="--clip-bands"):
        run(clip_bands=(1, 2))
    with pytest.raises(FileNotFoundError, match="CLIP checkpoint"):
        text_segment_raster(sam_tiny, tmp_path / "none.pt", scene, "pool", out, progress=False)
    assert not out.exists()
    out.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="already exists"):
        run()
    assert out.read_bytes() == b"keep me"


def _files(sam_tiny, clip, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The tiny SAM as an rsvit model file, the tiny CLIP as safetensors and its open_clip config."""
    from rsvit.models.spec import ModelSpec, save_model

    sam_file = tmp_path / "sam.safetensors"
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(sam_tiny.config).items()}
    save_model(sam_file, sam_tiny, ModelSpec("promptable", "sam_vit_b", head_kwargs=config))
    clip_file = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(clip_file))
    return sam_file, clip_file, write_tiny_config(tmp_path, clip.architecture)


def test_cli_text_option_end_to_end_and_its_errors(sam_tiny, clip, scene, tmp_path, capsys) -> None:
    from rsvit.cli.segment_raster import (
        _AVERAGING,
        _BACKGROUNDS,
        _SCORES,
        add_segment_raster_arguments,
        run_segment_raster,
    )

    assert (_SCORES, _BACKGROUNDS, _AVERAGING) == (SCORES, BACKGROUNDS, AVERAGING_RULES)
    sam_file, clip_file, config = _files(sam_tiny, clip, tmp_path)
    parser = add_segment_raster_arguments(argparse.ArgumentParser())
    base = ["--model", str(sam_file), "--input", str(scene), "--bands", "1,2,3", "--device", "cpu", "--quiet"]
    text = [
        *("--clip-model", str(clip_file), "--clip-config", str(config), "--templates", "skyclip"),
        *("--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0"),
    ]
    out, vec = tmp_path / "m.tif", tmp_path / "m.geojson"
    args = parser.parse_args(
        [
            *base,
            *text,
            "--text",
            "swimming pool",
            "--output",
            str(out),
            "--vector",
            str(vec),
            "--top-k",
            "1",
            "--threshold",
            "0",
        ]
    )
    assert run_segment_raster(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["text"] == "swimming pool" and summary["matches"] == 1 and summary["candidates"] >= 1
    [feature] = json.loads(vec.read_text())["features"]
    assert feature["properties"]["text"] == "swimming pool"
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert dst.crs == src.crs and dst.transform == src.transform

    prompts = tmp_path / "p.geojson"
    prompts.write_text(json.dumps({"type": "FeatureCollection", "features": [_box_feature(scene, BOXES[0])]}))
    cases = [
        ([*base, *text, "--text", "pool", "--prompts", str(prompts)], "cannot be combined"),
        ([*base, "--text", "pool"], "--clip-model"),
        ([*base, *text, "--text", "  "], "empty"),
        ([*base, *text, "--text", " ".join(["pool"] * 90)], "at most 77"),
        ([*base], "give --prompts"),
        ([*base, "--prompts", str(prompts), "--boxes", str(prompts)], "only apply with --text"),
        ([*base, *text, "--text", "pool", "--logit-scale", "big"], "--logit-scale"),
        ([*base, *text, "--text", "pool", "--boxes", str(tmp_path / "no.geojson")], "does not exist"),
    ]
    for argv, message in cases:
        args = parser.parse_args([*argv, "--output", str(tmp_path / "x.tif")])
        assert run_segment_raster(args) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()
