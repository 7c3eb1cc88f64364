"""Polygons per class from a class map: joined across strips, in the raster CRS or EPSG:4326."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from rasterio.transform import Affine
from shapely.geometry import shape

from rsvit.inference import polygonize_raster


@pytest.fixture
def class_map(tmp_path, write_raster):
    classes = np.zeros((100, 80), dtype=np.uint8)
    classes[5:45, 10:30] = 1  # a rectangle spanning three 16-row strips
    classes[20:70, 40:45] = 2  # a U: two bars that only meet in a lower strip
    classes[20:70, 60:65] = 2
    classes[65:70, 40:65] = 2
    classes[80:95, 5:25] = 255  # nodata: no polygon
    return write_raster(tmp_path / "classes.tif", classes, nodata=255), classes


def _features(path):
    data = json.loads(path.read_text())
    return data, [
        (f["properties"]["class"], f["properties"]["name"], shape(f["geometry"])) for f in data["features"]
    ]


def test_regions_are_whole_polygons_in_the_raster_crs(tmp_path, class_map):
    path, classes = class_map
    out = tmp_path / "polygons.geojson"
    n = polygonize_raster(path, out, classes=["bg", "field", "road"], crs="raster", simplify=0, strip_rows=16)
    data, features = _features(out)
    assert n == len(features) == 3  # one region per class, although strips cut every one of them
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    by_class = {value: (name, geom) for value, name, geom in features}
    assert {v: name for v, (name, _) in by_class.items()} == {0: "bg", 1: "field", 2: "road"}
    pixel_area = 2.0 * 2.0
    for value in (0, 1, 2):
        assert by_class[value][1].area == pytest.approx((classes == value).sum() * pixel_area)
        assert by_class[value][1].is_valid
    x0, y0, x1, y1 = by_class[1][1].bounds  # rows 5..45, cols 10..30 of a 2 m grid at (500000, 4500000)
    assert (x0, y0, x1, y1) == (500020.0, 4500000.0 - 90.0, 500060.0, 4500000.0 - 10.0)
    assert len(by_class[0][1].interiors) == 3  # the field, the U and the nodata block are holes


def test_wgs84_output_and_simplification(tmp_path, class_map):
    path, _ = class_map
    out = tmp_path / "wgs84.geojson"
    polygonize_raster(path, out, crs="EPSG:4326", simplify=1.0)
    data, features = _features(out)
    assert "crs" not in data  # RFC 7946: longitude/latitude implied
    for _, _, geom in features:
        lon0, lat0, lon1, lat1 = geom.bounds
        assert 14.9 < lon0 < lon1 < 15.1 and 40.6 < lat0 < lat1 < 40.7  # UTM 33N, E 500 km, N 4500 km
    with pytest.raises(ValueError, match="vector CRS must be one of"):
        polygonize_raster(path, tmp_path / "x.geojson", crs="EPSG:3857")
    assert not (tmp_path / "x.geojson").exists()


def test_staircase_is_simplified(tmp_path, write_raster):
    classes = np.zeros((64, 64), dtype=np.uint8)
    for r in range(64):
        classes[r, : r + 1] = 1  # a pixel staircase along the diagonal
    path = write_raster(tmp_path / "stairs.tif", classes)
    exact = tmp_path / "exact.geojson"
    simple = tmp_path / "simple.geojson"
    polygonize_raster(path, exact, simplify=0)
    polygonize_raster(path, simple, simplify=1.5)
    _, exact_f = _features(exact)
    _, simple_f = _features(simple)
    n_exact = sum(len(g.exterior.coords) for _, _, g in exact_f)
    n_simple = sum(len(g.exterior.coords) for _, _, g in simple_f)
    assert n_simple < n_exact / 10
    for (_, _, a), (_, _, b) in zip(exact_f, simple_f, strict=True):
        assert b.area == pytest.approx(a.area, rel=0.05)


def test_default_is_rfc7946_lonlat_with_seven_decimals(tmp_path, class_map):
    path, _ = class_map
    out = tmp_path / "default.geojson"
    polygonize_raster(path, out, simplify=0)
    data, features = _features(out)
    assert "crs" not in data and features
    decimals = re.findall(r"-?\d+\.(\d+)", json.dumps(data["features"][0]["geometry"]))
    assert decimals and max(len(d) for d in decimals) <= 7
    assert max(len(d) for d in decimals) >= 5  # rounded, not truncated to whole degrees


def test_pixel_coordinates_only_on_request_for_a_raster_without_crs(tmp_path, write_raster):
    classes = np.zeros((20, 30), np.uint8)
    classes[5:10, 4:12] = 1
    path = write_raster(tmp_path / "nocrs.tif", classes, crs=None, transform=Affine.identity())
    for crs in ("EPSG:4326", "raster"):
        with pytest.raises(ValueError, match=r"no CRS.*crs='pixel'"):
            polygonize_raster(path, tmp_path / "x.geojson", crs=crs)
        assert not (tmp_path / "x.geojson").exists()
    out = tmp_path / "pixel.geojson"
    polygonize_raster(path, out, crs="pixel", simplify=0)
    data, features = _features(out)
    assert "crs" not in data
    field = next(geom for value, _, geom in features if value == 1)
    assert field.bounds == (4.0, 5.0, 12.0, 10.0)  # columns and rows, y growing downwards
