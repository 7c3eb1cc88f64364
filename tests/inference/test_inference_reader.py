"""Reading model-ready windows: scaling by bit depth, band selection, nodata / alpha / NaN masks."""

from __future__ import annotations

import numpy as np
import pytest

from rsvit.inference.reader import InputError, SceneReader, parse_bands


def test_integer_rasters_scale_by_their_bit_depth(tmp_path, write_raster):
    data16 = np.array([[[0, 65535], [32768, 1000]]], dtype=np.uint16)
    reader = SceneReader(write_raster(tmp_path / "a.tif", data16))
    image, valid = reader.read(0, 0, 2, 2)
    np.testing.assert_allclose(image[0], data16[0] / 65535.0, rtol=1e-6)
    assert valid is None and image.dtype == np.float32
    data8 = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    image, _ = SceneReader(write_raster(tmp_path / "b.tif", data8)).read(0, 0, 2, 2)
    np.testing.assert_allclose(image[0], [[0, 1], [0.2, 0.4]], rtol=1e-6)


def test_floats_pass_through_and_a_declared_scale_wins(tmp_path, write_raster):
    data = np.array([[[0.25, 0.5], [1.5, -0.1]]], dtype=np.float32)
    image, _ = SceneReader(write_raster(tmp_path / "f.tif", data)).read(0, 0, 2, 2)
    np.testing.assert_array_equal(image[0], data[0])
    reflectance = np.array([[[0, 10000], [2500, 5000]]], dtype=np.uint16)
    reader = SceneReader(write_raster(tmp_path / "s2.tif", reflectance), scale=10000)
    np.testing.assert_allclose(reader.read(0, 0, 2, 2)[0][0], [[0, 1], [0.25, 0.5]], rtol=1e-6)


def test_normalisation_and_band_selection(tmp_path, write_raster):
    data = np.stack([np.full((4, 5), v, np.uint8) for v in (0, 51, 102, 255)])
    path = write_raster(tmp_path / "four.tif", data, photometric="minisblack")  # no alpha band
    reader = SceneReader(path, bands=[4, 2], expected_bands=2, mean=(0.5, 0.1), std=(0.5, 0.2))
    image, _ = reader.read(1, 1, 2, 3)
    assert image.shape == (2, 2, 3)
    np.testing.assert_allclose(image[0], (1.0 - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(image[1], (0.2 - 0.1) / 0.2, rtol=1e-5)
    with pytest.raises(InputError, match=r"bands 1\.\.4; cannot select \[7\]"):
        SceneReader(path, bands=[1, 7])
    with pytest.raises(InputError, match=r"provides 4 band.*expects 3.*--bands"):
        SceneReader(path, expected_bands=3)
    with pytest.raises(InputError, match="mean has 3 values but 2 bands"):
        SceneReader(path, bands=[1, 2], mean=(0.1, 0.2, 0.3))


def test_nodata_and_nan_pixels_are_masked_and_zeroed(tmp_path, write_raster):
    data = np.array([[[0, 10], [20, 0]], [[0, 11], [21, 5]]], dtype=np.uint8)
    reader = SceneReader(write_raster(tmp_path / "nd.tif", data, nodata=0), mean=(0.5, 0.5), std=(1, 1))
    image, valid = reader.read(0, 0, 2, 2)
    # GDAL's rule: a pixel is nodata only where every band is; (1, 1) has a valid second band.
    np.testing.assert_array_equal(valid, [[False, True], [True, True]])
    assert (image[:, 0, 0] == 0).all()  # fed as the mean (0 after normalisation), not as -0.5
    floats = np.array([[[np.nan, 1.0], [0.5, 0.25]]], dtype=np.float32)
    image, valid = SceneReader(write_raster(tmp_path / "nan.tif", floats)).read(0, 0, 2, 2)
    np.testing.assert_array_equal(valid, [[False, True], [True, True]])
    assert np.isfinite(image).all()


def test_rgba_alpha_is_the_mask_not_a_band(data_dir):
    path = data_dir / "geotiff" / "RGBA.byte.tif"
    reader = SceneReader(path, expected_bands=3)
    assert reader.bands == (1, 2, 3)
    image, valid = reader.read(0, 0, 718, 791)
    assert image.shape == (3, 718, 791)
    assert valid is not None and 0.3 < valid.mean() < 0.9  # the rotated scene inside a transparent frame
    assert not valid[0, 0] and valid[359, 395]


def test_float_raster_with_nodata(data_dir):
    reader = SceneReader(data_dir / "geotiff" / "float_raster_with_nodata.tif")
    image, valid = reader.read(0, 0, 12, 13)
    assert valid is not None and not valid.all() and valid.any()
    assert np.abs(image).max() <= 1.0  # the -3.4e38 nodata values never reach the model


def test_unopenable_and_missing_files(tmp_path):
    bad = tmp_path / "text.tif"
    bad.write_text("not a raster")
    with pytest.raises(InputError, match="not a raster GDAL can open"):
        SceneReader(bad)
    with pytest.raises(FileNotFoundError):
        SceneReader(tmp_path / "missing.tif")


def test_parse_bands():
    assert parse_bands("1, 2,3") == (1, 2, 3)
    assert parse_bands([4, 1]) == (4, 1)
    assert parse_bands(None) is None
    with pytest.raises(InputError, match="numbered from 1"):
        parse_bands("0,1")
    with pytest.raises(InputError, match="comma-separated"):
        parse_bands("red,green")
