"""Prompted SAM segmentation of a real NAIP raster: georeferencing, stitching, prompt ids, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_points
from rasterio.windows import Window
from safetensors.torch import load_file

from models.promptable.conftest import tiny_config  # the fixture model's config (tests/ is on the path)
from raster_crops import write_crop
from rsvit.inference.promptable import RasterSamPredictor, segment_raster, shift_prompt, to_uint8
from rsvit.inference.reader import InputError, SceneReader
from rsvit.models.promptable import Sam, SamPredictor, build_sam, convert_official_sam_state_dict
from rsvit.structures.prompts import Prompt

NAIP = "geotiff/naip/m_4709963_se_14_1_20200831.tif"


@pytest.fixture(scope="module")
def sam_tiny(reference_dir: Path) -> Sam:
    """The reduced official SAM of the reference fixtures (input 176 pixels)."""
    official = json.loads((reference_dir / "fixtures" / "sam_tiny_config.json").read_text())
    config = tiny_config(official)
    model = build_sam(config)
    weights = load_file(reference_dir / "fixtures" / "sam_tiny.safetensors")
    model.load_state_dict(convert_official_sam_state_dict(weights), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def naip_crop(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400 x 300 georeferenced crop (4 bands, EPSG:26914) of the real NAIP tile."""
    path = tmp_path_factory.mktemp("naip") / "crop.tif"
    # photometric as the source: 4 data bands, no alpha
    return write_crop(data_dir / NAIP, path, Window(100, 100, 400, 300), photometric="MINISBLACK")


def lonlat(raster: Path, col: float, row: float) -> list[float]:
    with rasterio.open(raster) as src:
        x, y = src.transform @ (col + 0.5, row + 0.5)
        lon, lat = warp_points(src.crs, "EPSG:4326", [x], [y])
    return [lon[0], lat[0]]


def point(raster: Path, col: float, row: float, pid: str) -> dict:
    geometry = {"type": "Point", "coordinates": lonlat(raster, col, row)}
    return {"type": "Feature", "properties": {"prompt_id": pid}, "geometry": geometry}


def box(raster: Path, x0: float, y0: float, x1: float, y1: float, pid: str) -> dict:
    ring = [lonlat(raster, x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    return {
        "type": "Feature",
        "properties": {"prompt_id": pid},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def test_mask_raster_is_georeferenced_like_input_and_polygons_carry_prompt_ids(
    sam_tiny: Sam, naip_crop: Path, tmp_path: Path
) -> None:
    prompts = collection(
        point(naip_crop, 50, 60, "a"), point(naip_crop, 70, 80, "b"), box(naip_crop, 300, 200, 360, 260, "c")
    )
    out, vec = tmp_path / "mask.tif", tmp_path / "mask.geojson"
    summary = segment_raster(sam_tiny, naip_crop, prompts, out, vector=vec, bands=(1, 2, 3), progress=False)
    assert summary["prompts"] == 3
    assert summary["windows"] == summary["embeddings"] == 2  # a and b share a window and its embedding
    with rasterio.open(naip_crop) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height, dst.count, dst.dtypes[0]) == (src.width, src.height, 1, "uint8")
        assert dst.nodata == 255
        values = dst.read(1)
    assert set(np.unique(values)) <= {0, 1, 2, 3}
    features = json.loads(vec.read_text())["features"]
    present = {int(v) for v in np.unique(values) if 0 < v < 255}
    assert present, "the tiny model should claim some pixels"
    assert {f["properties"]["value"] for f in features} == present
    ids = {"a": 1, "b": 2, "c": 3}
    for f in features:
        assert ids[f["properties"]["prompt_id"]] == f["properties"]["value"]
        assert 0 <= f["properties"]["score"] <= 1.5
    # polygons are in EPSG:4326 and fall on the raster's footprint
    lon0, lat0 = lonlat(naip_crop, -0.5, -0.5)
    lon1, lat1 = lonlat(naip_crop, 399.5, 299.5)
    coords = np.array(
        [c for f in features for poly in _polygons(f["geometry"]) for ring in poly for c in ring]
    )
    assert (coords[:, 0] > min(lon0, lon1) - 1e-4).all() and (coords[:, 0] < max(lon0, lon1) + 1e-4).all()
    assert (coords[:, 1] > min(lat0, lat1) - 1e-4).all() and (coords[:, 1] < max(lat0, lat1) + 1e-4).all()
    sidecar = out.with_name(out.name + ".aux.xml").read_text()
    assert "<Category>c</Category>" in sidecar


def _polygons(geometry: dict) -> list:
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def test_raster_answer_equals_predictor_on_the_same_window(
    sam_tiny: Sam, naip_crop: Path, tmp_path: Path
) -> None:
    seen: list = []
    out = tmp_path / "mask.tif"
    prompts = collection(box(naip_crop, 220, 100, 280, 150, "roof"))
    segment_raster(
        sam_tiny,
        naip_crop,
        prompts,
        out,
        bands=(1, 2, 3),
        progress=False,
        on_window=lambda w, r: seen.append((w, r)),
    )
    [(window, [result])] = seen
    x0, y0, w, h = window
    assert w == h == sam_tiny.img_size and x0 <= 220 and x0 + w > 280 and y0 <= 100 and y0 + h > 150
    reader = SceneReader(naip_crop, bands=(1, 2, 3))
    image, _ = reader.read(y0, x0, h, w)
    predictor = SamPredictor(sam_tiny)
    predictor.set_image(to_uint8(image))
    local = shift_prompt(Prompt(box=np.array([220.0, 100.0, 280.0, 150.0]), prompt_id="roof"), window)
    masks, iou, _ = predictor.predict_prompt(local)
    best = int(np.argmax(iou))
    np.testing.assert_array_equal(result.mask, masks[best])
    assert result.score == pytest.approx(float(iou[best]))
    with rasterio.open(out) as dst:
        stitched = dst.read(1)
    np.testing.assert_array_equal(stitched[y0 : y0 + h, x0 : x0 + w] == 1, masks[best])
    outside = np.ones(stitched.shape, bool)
    outside[y0 : y0 + h, x0 : x0 + w] = False
    assert not stitched[outside].any()


def test_batched_prompts_match_one_by_one_and_embeddings_are_cached(sam_tiny: Sam, naip_crop: Path) -> None:
    reader = SceneReader(naip_crop, bands=(1, 2, 3))
    engine = RasterSamPredictor(sam_tiny, reader, cache_size=2)
    prompts = [Prompt(points=np.array([[40.0, 50.0]]), labels=np.array([1]), prompt_id=i) for i in range(3)]
    prompts[1].points = np.array([[60.0, 30.0]])
    prompts[2].points = np.array([[20.0, 90.0]])
    window = engine.window_of(prompts[0])
    batched = engine.predict(prompts, window)
    singles = [engine.predict([p], window)[0] for p in prompts]
    assert engine.embeddings_computed == 1
    for b, s in zip(batched, singles, strict=True):
        assert (b.mask != s.mask).mean() < 1e-3
        assert b.score == pytest.approx(s.score, abs=1e-4)
    far = Prompt(points=np.array([[390.0, 290.0]]), labels=np.array([1]), prompt_id="far")
    engine.predict([far])
    engine.predict([prompts[0]], window)
    assert engine.embeddings_computed == 2  # the first window came back from the cache


def test_binary_mode_writes_zero_one(sam_tiny: Sam, naip_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "binary.tif"
    prompts = collection(point(naip_crop, 50, 60, "a"), point(naip_crop, 300, 250, "b"))
    segment_raster(sam_tiny, naip_crop, prompts, out, bands=(1, 2, 3), mode="binary", progress=False)
    with rasterio.open(out) as dst:
        values = dst.read(1)
    assert set(np.unique(values)) == {0, 1}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: collection(), "no prompt"),
        (lambda r: collection(point(r, 900, 60, "x")), "outside the raster"),
        (lambda r: collection(box(r, 10, 10, 10, 40, "z")), "zero"),
    ],
)
def test_bad_prompts_are_named(sam_tiny: Sam, naip_crop: Path, tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segment_raster(
            sam_tiny, naip_crop, make(naip_crop), tmp_path / "m.tif", bands=(1, 2, 3), progress=False
        )
    assert not (tmp_path / "m.tif").exists()


def test_wrong_band_count_asks_for_bands(sam_tiny: Sam, naip_crop: Path, tmp_path: Path) -> None:
    prompts = collection(point(naip_crop, 50, 60, "a"))
    with pytest.raises(InputError, match="--bands"):
        segment_raster(sam_tiny, naip_crop, prompts, tmp_path / "m.tif", progress=False)


def test_model_file_that_is_not_promptable(naip_crop: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a model")
    prompts = collection(point(naip_crop, 50, 60, "a"))
    with pytest.raises(ValueError, match="neither an rsvit model file"):
        segment_raster(bogus, naip_crop, prompts, tmp_path / "m.tif", progress=False)


def test_existing_output_is_refused(sam_tiny: Sam, naip_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.tif"
    out.write_bytes(b"keep me")
    prompts = collection(point(naip_crop, 50, 60, "a"))
    with pytest.raises(ValueError, match="already exists"):
        segment_raster(sam_tiny, naip_crop, prompts, out, bands=(1, 2, 3), progress=False)
    assert out.read_bytes() == b"keep me"


def test_nodata_is_kept_and_mask_prompts_and_large_boxes_work(
    sam_tiny: Sam, naip_crop: Path, tmp_path: Path
) -> None:
    with rasterio.open(naip_crop) as src:
        data, profile = src.read(), src.profile
    data[:, :40, :60] = 0
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **{**profile, "nodata": 0}) as dst:
        dst.write(data)
    seen: list = []
    prompts = collection(
        box(holed, 5, 5, 120, 90, "corner"),  # partly over the nodata corner
        box(holed, 60, 40, 330, 260, "large"),  # wider than the 176-pixel window: a window of its own
    )
    out = tmp_path / "m.tif"
    segment_raster(
        sam_tiny,
        holed,
        prompts,
        out,
        bands=(1, 2, 3),
        polygon_as="mask",
        progress=False,
        on_window=lambda w, r: seen.append(w),
    )
    with rasterio.open(out) as dst:
        values = dst.read(1)
    assert (values[:40, :60] == 255).all() and not (values[40:, :] == 255).any()
    large = [w for w in seen if w[2] > sam_tiny.img_size]
    assert len(large) == 1 and large[0][0] <= 60 and large[0][0] + large[0][2] > 330


def test_four_band_model_reads_all_bands(sam_tiny: Sam, naip_crop: Path, tmp_path: Path) -> None:
    import copy

    from rsvit.models.promptable import adapt_sam_in_chans

    model = adapt_sam_in_chans(copy.deepcopy(sam_tiny), 4)
    out = tmp_path / "m.tif"
    summary = segment_raster(model, naip_crop, collection(point(naip_crop, 50, 60, "a")), out, progress=False)
    assert summary["embeddings"] == 1 and out.exists()
    with pytest.raises(InputError, match="model expects 4"):
        segment_raster(
            model, naip_crop, collection(point(naip_crop, 50, 60, "a")), tmp_path / "x.tif", bands=(1, 2, 3)
        )


def test_a_failed_run_leaves_no_file_behind(sam_tiny: Sam, naip_crop: Path, tmp_path: Path) -> None:
    def fail(window, results) -> None:
        raise KeyboardInterrupt

    out_dir = tmp_path / "out"
    prompts = collection(point(naip_crop, 50, 60, "a"))
    with pytest.raises(KeyboardInterrupt):
        segment_raster(
            sam_tiny,
            naip_crop,
            prompts,
            out_dir / "m.tif",
            vector=out_dir / "m.geojson",
            bands=(1, 2, 3),
            progress=False,
            on_window=fail,
        )
    assert list(out_dir.iterdir()) == []


def test_overlapping_masks_go_to_the_lower_prompt_number(
    sam_tiny: Sam, naip_crop: Path, tmp_path: Path
) -> None:
    seen: dict = {}

    def keep(window, results) -> None:
        seen[window] = results

    prompts = collection(  # the first prompt's window lies below the second's, so it is answered last
        box(naip_crop, 100, 150, 300, 290, "first"), box(naip_crop, 100, 10, 300, 170, "second")
    )
    out, vec = tmp_path / "m.tif", tmp_path / "m.geojson"
    segment_raster(
        sam_tiny, naip_crop, prompts, out, vector=vec, bands=(1, 2, 3), progress=False, on_window=keep
    )
    assert len(seen) == 2
    full = []
    for (x0, y0, w, h), [result] in sorted(seen.items(), key=lambda kv: -kv[0][1]):
        canvas = np.zeros((300, 400), bool)
        canvas[y0 : y0 + h, x0 : x0 + w] = result.mask
        full.append(canvas)
    both = full[0] & full[1]
    assert both.any(), "the two masks should overlap for this check to mean something"
    with rasterio.open(out) as dst:
        values = dst.read(1)
    assert (values[both] == 1).all()
    assert (values[full[1] & ~full[0]] == 2).all()
    areas = {f["properties"]["value"] for f in json.loads(vec.read_text())["features"]}
    assert areas == {1, 2}
