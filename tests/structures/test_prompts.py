"""Prompt types: pixel/map conversion, GeoJSON in EPSG:4326 onto the real NAIP raster, scribble rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from rsvit.structures.prompts import (
    map_to_pixel,
    pixel_to_map,
    read_prompts,
    scribble_mask_points,
    scribble_points,
)

NAIP = "geotiff/naip/m_4709963_se_14_1_20200831.tif"


@pytest.fixture(scope="module")
def naip(data_dir: Path) -> dict:
    with rasterio.open(data_dir / NAIP) as src:
        assert src.crs.to_epsg() == 26914
        return {"transform": src.transform, "raster_crs": src.crs, "shape": (src.height, src.width)}


def lonlat(pixels, naip: dict) -> list[list[float]]:
    """Pixel (x, y) -> EPSG:4326 (lon, lat) through the raster's CRS."""
    xy = pixel_to_map(np.asarray(pixels, dtype=np.float64), naip["transform"])
    lon, lat = warp_transform(naip["raster_crs"], "EPSG:4326", xy[:, 0].tolist(), xy[:, 1].tolist())
    return [[a, b] for a, b in zip(lon, lat, strict=True)]


def feature(kind: str, coords, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coords}, "properties": props}


def collection(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def test_pixel_centres_are_integers(naip: dict) -> None:
    t = naip["transform"]
    assert np.allclose(pixel_to_map([0.0, 0.0], t), [t.c + t.a / 2, t.f + t.e / 2])
    pts = np.array([[3.0, 5.0], [100.25, 7.5]])
    assert np.allclose(map_to_pixel(pixel_to_map(pts, t), t), pts)


def test_points_in_4326_grouped_by_prompt_id(naip: dict, tmp_path: Path) -> None:
    fg, bg = [[120.0, 80.0]], [[140.0, 95.0]]
    path = tmp_path / "prompts.geojson"
    path.write_text(
        json.dumps(
            collection(
                feature("Point", lonlat(fg, naip)[0], prompt_id="a", label="fg"),
                feature("Point", lonlat(bg, naip)[0], prompt_id="a", label=0),
                feature("Point", lonlat([[600.0, 500.0]], naip)[0], prompt_id="b"),
            )
        )
    )
    prompts = read_prompts(path, **naip)
    assert [p.prompt_id for p in prompts] == ["a", "b"]
    assert np.allclose(prompts[0].points, fg + bg, atol=1e-3)
    assert prompts[0].labels.tolist() == [1, 0]
    assert prompts[1].labels.tolist() == [1] and prompts[0].box is None


def test_polygon_as_box_and_as_mask(naip: dict) -> None:
    ring = [[200.0, 100.0], [260.0, 100.0], [260.0, 140.0], [200.0, 140.0], [200.0, 100.0]]
    source = collection(feature("Polygon", [lonlat(ring, naip)]))
    (box_prompt,) = read_prompts(source, **naip)
    assert np.allclose(box_prompt.box, [200, 100, 260, 140], atol=1e-3)
    (mask_prompt,) = read_prompts(source, polygon_as="mask", **naip)
    mask = mask_prompt.mask
    assert mask.shape == naip["shape"] and mask.dtype == bool
    assert mask[120, 230] and not mask[120, 270] and not mask[90, 230]
    assert abs(int(mask.sum()) - 60 * 40) <= 2 * (60 + 40)  # the ring's area, up to its edge pixels


def test_linestring_becomes_points_on_the_scribble(naip: dict) -> None:
    line = [[300.0, 300.0], [400.0, 300.0], [400.0, 350.0]]
    (prompt,) = read_prompts(collection(feature("LineString", lonlat(line, naip), label="bg")), **naip)
    assert prompt.labels.tolist() == [0] * len(prompt.points)
    assert len(prompt.points) == 10  # 150 px at spacing 16 -> floor(150 / 16) + 1
    on_first = np.isclose(prompt.points[:, 1], 300, atol=1e-3) & (prompt.points[:, 0] <= 400 + 1e-3)
    on_second = np.isclose(prompt.points[:, 0], 400, atol=1e-3) & (prompt.points[:, 1] >= 300 - 1e-3)
    assert (on_first | on_second).all()
    assert np.allclose(prompt.points[[0, -1]], [line[0], line[-1]], atol=1e-3)
    fg = read_prompts(collection(feature("LineString", lonlat(line, naip))), scribble_box=True, **naip)
    assert np.allclose(fg[0].box, [292, 292, 408, 358], atol=1e-3)


def test_scribble_rule() -> None:
    pts = scribble_points([[0, 0], [100, 0]], spacing=16, max_points=16)
    assert len(pts) == 7 and np.allclose(pts[[0, -1]], [[0, 0], [100, 0]])
    assert np.allclose(np.diff(pts[:, 0]), 100 / 6)
    assert len(scribble_points([[0, 0], [1000, 0]], spacing=16, max_points=5)) == 5
    assert np.allclose(scribble_points([[0, 0], [10, 0]], spacing=16), [[5, 0]])
    mask = np.zeros((64, 64), dtype=bool)
    mask[30:33, 5:60] = True
    mp = scribble_mask_points(mask, spacing=16, max_points=3)
    assert len(mp) == 3 and mask[mp[:, 1].astype(int), mp[:, 0].astype(int)].all()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ("   ", "empty"),
        (collection(feature("Point", [10.0, 10.0])), "outside the raster"),
        ({"type": "GeometryCollection", "geometries": []}, "not a prompt"),
        (collection(feature("Point", [-98.95, 47.0], label="maybe")), "not a prompt label"),
    ],
)
def test_bad_sources_raise(naip: dict, source, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_prompts(source, **naip)


def test_zero_area_box_and_file_errors(naip: dict, tmp_path: Path) -> None:
    flat = [[200.0, 100.0], [260.0, 100.0], [230.0, 100.0], [200.0, 100.0]]
    with pytest.raises(ValueError, match="zero area"):
        read_prompts(collection(feature("Polygon", [lonlat(flat, naip)])), **naip)
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_prompts(empty, **naip)
    shp = tmp_path / "prompts.shp"
    shp.write_bytes(b"\0")
    with pytest.raises(ValueError, match="ogr2ogr"):
        read_prompts(shp, **naip)
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.geojson", **naip)


def test_legacy_crs_member_and_multipoint(naip: dict) -> None:
    pts = np.array([[10.0, 20.0], [30.0, 40.0]])
    source = collection(feature("MultiPoint", pixel_to_map(pts, naip["transform"]).tolist(), label=True))
    source["crs"] = {"type": "name", "properties": {"name": "EPSG:26914"}}
    (prompt,) = read_prompts(source, **naip)
    assert np.allclose(prompt.points, pts) and prompt.labels.tolist() == [1, 1]
    with pytest.raises(ValueError, match="cannot be reprojected"):  # the same numbers read as lon/lat
        read_prompts(source, crs="EPSG:4326", **naip)


def test_multilinestring_is_thinned_over_all_lines(naip: dict) -> None:
    lines = [[[100.0, 100.0], [300.0, 100.0]], [[100.0, 200.0], [300.0, 200.0]]]
    source = collection(feature("MultiLineString", [lonlat(line, naip) for line in lines]))
    (prompt,) = read_prompts(source, max_points=6, **naip)
    assert len(prompt.points) == 6
    assert set(np.round(prompt.points[:, 1]).tolist()) == {100.0, 200.0}  # both lines keep points
