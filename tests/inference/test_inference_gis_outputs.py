"""Outputs GIS tools read as meant: class names GDAL itself reports, readable colours, RFC 7946 vectors."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from pathlib import Path

import pytest
import rasterio

from rsvit.inference import predict_raster
from rsvit.inference.outputs.dense_classes import display_palette
from rsvit.viz.palettes import default_palette, is_ambiguous
from rsvit.weights import WeightsMetadata

DUBAI_LIKE = ("building", "land", "road", "vegetation", "water", "unlabeled")
GOLD_AND_YELLOW = [[60, 16, 152], [132, 41, 246], [110, 193, 228], [254, 221, 58], [226, 169, 41], [155] * 3]


def _gdal() -> ctypes.CDLL:
    """The GDAL library rasterio runs on (its wheel bundles one), loaded for its C API."""
    libs = Path(rasterio.__file__).parent.parent / "rasterio.libs"
    candidates = sorted(libs.glob("libgdal*.so*"))
    if not candidates:
        found = ctypes.util.find_library("gdal")
        assert found, "no GDAL library found beside rasterio or on the system"
        candidates = [Path(found)]
    lib = ctypes.CDLL(str(candidates[0]))
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALGetDefaultRAT.restype = ctypes.c_void_p
    lib.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetValueAsString.restype = ctypes.c_char_p
    lib.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.GDALGetMetadata.restype = ctypes.c_void_p
    lib.GDALGetMetadata.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    return lib


def _gdal_categories(path: Path) -> tuple[list[str], list[list[str]]]:
    """Category names and attribute table rows of band 1, as GDAL reports them."""
    lib = _gdal()
    dataset = lib.GDALOpen(str(path).encode(), 0)
    assert dataset, f"GDAL could not open {path}"
    try:
        band = lib.GDALGetRasterBand(dataset, 1)
        lib.GDALGetMetadata(band, None)  # as gdalinfo does first: GTiff loads the PAM sidecar lazily
        names, pointer, i = [], lib.GDALGetRasterCategoryNames(band), 0
        while pointer and pointer[i] is not None:
            names.append(pointer[i].decode())
            i += 1
        rat = lib.GDALGetDefaultRAT(band)
        rows = []
        if rat:
            columns = lib.GDALRATGetColumnCount(rat)
            for r in range(lib.GDALRATGetRowCount(rat)):
                rows.append([lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(columns)])
        return names, rows
    finally:
        lib.GDALClose(dataset)


@pytest.fixture
def scene_path(tmp_path, write_raster, scene):
    return write_raster(tmp_path / "scene.tif", scene(96, 80, seed=2))


def test_class_names_reach_gdal_as_categories_and_attribute_table(tmp_path, scene_path, pixel_model):
    meta = WeightsMetadata(
        classes=("water", "trees", "roofs"), extra={"palette": [[0, 0, 255], [0, 200, 0], [200, 0, 0]]}
    )
    out = tmp_path / "out" / "map.tif"
    predict_raster(pixel_model(), scene_path, out, window=64, overlap=16, metadata=meta, progress=False)
    names, rows = _gdal_categories(out)
    assert names == ["water", "trees", "roofs"]
    assert rows == [
        ["0", "water", "0", "0", "255"],
        ["1", "trees", "0", "200", "0"],
        ["2", "roofs", "200", "0", "0"],
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["map.tif", "map.tif.aux.xml"]
    with rasterio.open(out) as dst:  # what rasterio shows is unchanged
        assert json.loads(dst.tags()["CLASSES"]) == ["water", "trees", "roofs"]


def test_ambiguous_dataset_colours_give_way_to_land_cover_colours():
    assert is_ambiguous(GOLD_AND_YELLOW)
    chosen = display_palette({"palette": GOLD_AND_YELLOW}, DUBAI_LIKE, 6)
    colours = dict(zip(DUBAI_LIKE, chosen, strict=True))
    r, g, b = colours["water"]
    assert b > r + 80 and b > g  # blue
    r, g, b = colours["vegetation"]
    assert g > r + 60 and g > b + 60  # green
    assert not is_ambiguous(chosen) and len(set(chosen)) == 6
    readable = [[10, 20, 30], [200, 0, 0], [0, 180, 60]]  # a dataset's own distinct colours are kept
    assert display_palette({"palette": readable}, ("a", "b", "c"), 3) == [tuple(c) for c in readable]
    chosen_by_config = [[1, 1, 1], [2, 2, 2], [3, 3, 3]]  # a configured display palette wins, as given
    assert display_palette({"display_palette": chosen_by_config, "palette": readable}, None, 3) == [
        tuple(c) for c in chosen_by_config
    ]
    assert default_palette(3) == default_palette(3, names=("x", "y", "z"))  # unknown names: tab20 as before


def test_class_map_of_an_ambiguous_palette_has_a_blue_water_colour(tmp_path, scene_path, pixel_model):
    meta = WeightsMetadata(classes=DUBAI_LIKE, extra={"palette": GOLD_AND_YELLOW})
    out = tmp_path / "map.tif"
    predict_raster(
        pixel_model(classes=6), scene_path, out, window=64, overlap=16, metadata=meta, progress=False
    )
    with rasterio.open(out) as dst:
        r, g, b, _ = dst.colormap(1)[DUBAI_LIKE.index("water")]
    assert b > g
    assert b > r + 80
