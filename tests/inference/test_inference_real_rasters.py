"""Real GeoTIFFs: each gives a correct georeferenced map or a clear error, never a stray file."""

from __future__ import annotations

import json

import pytest
import rasterio

from rsvit.inference import InputError, predict_raster
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.weights import WeightsMetadata


def _saved_segmentation(tmp_path, in_chans: int):
    spec = ModelSpec(
        "segmentation", "resnet18", head="fcn", num_classes=3, in_chans=in_chans, head_kwargs={"channels": 16}
    )
    path = tmp_path / f"seg{in_chans}.safetensors"
    meta = WeightsMetadata(
        classes=("background", "built", "vegetation"), mean=(0.4,) * in_chans, std=(0.2,) * in_chans
    )
    save_model(path, build_model(spec), spec, meta)
    return path


@pytest.fixture
def rgb_model(tmp_path):
    return _saved_segmentation(tmp_path, 3)


def _check_grid_and_nodata(source, output):
    with rasterio.open(source) as src, rasterio.open(output) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (
            src.crs,
            src.transform,
            src.width,
            src.height,
        )
        classes = dst.read(1)
        valid = src.dataset_mask() > 0
    assert ((classes == 255) == ~valid).all()
    return classes, valid


def test_rgb_byte_with_nodata_border_and_wgs84_polygons(tmp_path, data_dir, rgb_model):
    source = data_dir / "geotiff" / "RGB.byte.tif"
    out = tmp_path / "rgb" / "map.tif"
    vector = tmp_path / "rgb" / "map.geojson"
    report = predict_raster(
        rgb_model, source, out, window=512, overlap=64, vector=vector, vector_crs="EPSG:4326", progress=False
    )
    classes, valid = _check_grid_and_nodata(source, out)
    assert 0.5 < valid.mean() < 0.9 and (classes[valid] < 3).all()
    features = json.loads(vector.read_text())["features"]
    assert report.features == len(features) > 0
    lons = [x for f in features for ring in f["geometry"]["coordinates"] for x, _ in ring]
    lats = [y for f in features for ring in f["geometry"]["coordinates"] for _, y in ring]
    assert -79 < min(lons) < max(lons) < -76 and 23 < min(lats) < max(lats) < 26  # the Bahamas scene


def test_rgba_uses_alpha_as_mask(tmp_path, data_dir, rgb_model):
    source = data_dir / "geotiff" / "RGBA.byte.tif"
    out = tmp_path / "map.tif"
    predict_raster(rgb_model, source, out, window=512, overlap=64, progress=False)
    _check_grid_and_nodata(source, out)


def test_float_raster_with_nodata(tmp_path, data_dir, pixel_model):
    source = data_dir / "geotiff" / "float_raster_with_nodata.tif"
    out = tmp_path / "map.tif"
    meta = WeightsMetadata(classes=("low", "high"))
    report = predict_raster(pixel_model(in_chans=1, classes=2), source, out, metadata=meta, progress=False)
    _classes, valid = _check_grid_and_nodata(source, out)
    assert report.windows == 1 and valid.any() and not valid.all()


def test_all_nodata_gives_an_all_nodata_map_without_running_the_model(tmp_path, data_dir, pixel_model):
    source = data_dir / "geotiff" / "all-nodata.tif"
    out = tmp_path / "map.tif"
    report = predict_raster(
        pixel_model(in_chans=4, classes=3),
        source,
        out,
        window=256,
        overlap=32,
        metadata=WeightsMetadata(classes=("a", "b", "c")),
        progress=False,
    )
    classes, _ = _check_grid_and_nodata(source, out)
    assert (classes == 255).all()
    assert report.windows == 0 and report.skipped_windows > 0


def test_corrupt_file_is_a_clear_error_and_leaves_nothing(tmp_path, data_dir, rgb_model):
    out = tmp_path / "out" / "map.tif"
    with pytest.raises(InputError, match=r"corrupt\.tif.*damaged or truncated"):
        predict_raster(
            rgb_model, data_dir / "geotiff" / "corrupt.tif", out, window=512, overlap=0, progress=False
        )
    assert list(out.parent.iterdir()) == []


def test_naip_four_bands(tmp_path, data_dir, rgb_model):
    source = data_dir / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    out = tmp_path / "map4.tif"
    predict_raster(_saved_segmentation(tmp_path, 4), source, out, window=512, overlap=64, progress=False)
    _check_grid_and_nodata(source, out)
    with pytest.raises(
        InputError, match=r"provides 4 band\(s\) \[1, 2, 3, 4\] but the model expects 3.*--bands"
    ):
        predict_raster(rgb_model, source, tmp_path / "map3.tif", progress=False)
    predict_raster(
        rgb_model, source, tmp_path / "map3.tif", bands="1,2,3", window=512, overlap=64, progress=False
    )  # red, green, blue of the four
    _check_grid_and_nodata(source, tmp_path / "map3.tif")


def test_single_band_into_a_three_band_model_is_a_clear_error(tmp_path, data_dir, rgb_model):
    source = data_dir / "geotiff" / "rgb1_fake_nir_epsg3857.tif"
    out = tmp_path / "map.tif"
    with pytest.raises(InputError, match=r"provides 1 band\(s\) \[1\] but the model expects 3"):
        predict_raster(rgb_model, source, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg3.safetensors"]


def test_bundled_naip_sample_is_rgb_plus_nir_and_reads_without_warnings(tmp_path, rgb_model):
    """The demo's scene labels its fourth band as data (near infrared), not alpha: an RGB model needs
    ``--bands 1,2,3``, and reading raises no nodata/alpha ambiguity warning."""
    import warnings
    from importlib import resources

    from rasterio.enums import ColorInterp

    source = resources.files("rsvit") / "assets" / "naip_2020_sample.tif"
    with rasterio.open(source) as src:
        assert src.colorinterp[3] != ColorInterp.alpha and src.nodata == 0
    with pytest.raises(InputError, match=r"provides 4 band\(s\).*expects 3"):
        predict_raster(rgb_model, source, tmp_path / "m.tif", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = predict_raster(rgb_model, source, tmp_path / "m.tif", bands="1,2,3", progress=False)
    assert report.width == 640 and report.height == 512
    _check_grid_and_nodata(source, tmp_path / "m.tif")
