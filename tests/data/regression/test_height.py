"""Image + height raster pairs on real 2 m elevation rasters (EPSG:26918, -9999 nodata in the DTM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from rsvit.data.regression.datasets import (
    GridMismatchError,
    HeightPairDataset,
    read_height_image,
    read_height_pair,
)


@pytest.fixture(scope="module")
def elevation(data_dir: Path) -> Path:
    folder = data_dir / "geotiff" / "elevation"
    for name in ("dsm.tif", "dtm.tif", "hag.tif"):
        assert (folder / name).is_file(), f"missing {folder / name}"
    return folder


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile.copy()


def _write(path: Path, array: np.ndarray, profile: dict, **changes: object) -> Path:
    profile = {**profile, **changes, "count": array.shape[0] if array.ndim == 3 else 1}
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    profile["tiled"] = False
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array if array.ndim == 3 else array[None])
    return path


def test_reads_pair_and_masks_nodata(elevation: Path) -> None:
    dtm, _ = _read(elevation / "dtm.tif")
    dsm, _ = _read(elevation / "dsm.tif")
    pair = read_height_pair(elevation / "dsm.tif", elevation / "dtm.tif", kind="dsm")
    nodata = dtm == -9999
    assert nodata.sum() == 276  # the real file's nodata patch
    np.testing.assert_array_equal(pair.valid, ~nodata)
    np.testing.assert_array_equal(pair.target[~nodata], dtm[~nodata])
    assert (pair.target[nodata] == 0).all()
    assert pair.image.shape == (1, 259, 283) and pair.image.dtype == np.float32
    np.testing.assert_array_equal(pair.image[0], dsm)  # float imagery is not rescaled
    assert pair.crs.to_epsg() == 26918


def test_ndsm_negative_and_nan_policies(elevation: Path, tmp_path: Path) -> None:
    hag, profile = _read(elevation / "hag.tif")
    shifted = hag - 1.0  # ground (0) becomes -1
    shifted[5, 7] = np.nan
    shifted[0, 0] = -9999.0
    target = _write(tmp_path / "ndsm.tif", shifted.astype(np.float32), profile)
    image = elevation / "dsm.tif"
    negative = np.isfinite(shifted) & (shifted < 0) & (shifted != -9999)
    assert negative.sum() > 1000

    keep_dsm = read_height_pair(image, target, kind="dsm")
    assert not keep_dsm.valid[5, 7] and not keep_dsm.valid[0, 0]
    assert keep_dsm.valid.sum() == shifted.size - 2
    np.testing.assert_array_equal(keep_dsm.target[negative], shifted[negative])

    clip = read_height_pair(image, target, kind="ndsm", negative="clip")
    assert clip.valid[negative].all() and (clip.target[negative] == 0).all()
    assert clip.target.min() == 0.0

    flag = read_height_pair(image, target, kind="ndsm", negative="invalid")
    np.testing.assert_array_equal(flag.valid, keep_dsm.valid & ~negative)

    keep = read_height_pair(image, target, kind="ndsm", negative="keep")
    np.testing.assert_array_equal(keep.target, keep_dsm.target)


def test_grid_mismatch_error_names_every_difference(elevation: Path, data_dir: Path, tmp_path: Path) -> None:
    rgb = data_dir / "geotiff" / "RGB.byte.tif"
    with pytest.raises(GridMismatchError) as info:
        read_height_pair(rgb, elevation / "dsm.tif")
    message = str(info.value)
    assert "CRS EPSG:32618 != EPSG:26918" in message
    assert "transform" in message and "size (height, width) (718, 791) != (259, 283)" in message
    assert "reproject=True" in message

    # Only the transform differs: the message says so and nothing else.
    hag, profile = _read(elevation / "hag.tif")
    moved = _write(
        tmp_path / "moved.tif", hag, profile, transform=profile["transform"] @ Affine.translation(3, 0)
    )
    with pytest.raises(GridMismatchError) as info:
        read_height_pair(elevation / "dsm.tif", moved)
    assert "transform" in str(info.value)
    assert "CRS" not in str(info.value) and "size" not in str(info.value)


def test_reprojection_onto_coarser_grid_averages_blocks(elevation: Path, tmp_path: Path) -> None:
    hag, profile = _read(elevation / "hag.tif")
    # A 4 m image grid aligned with the 2 m target, offset by (10, 6) target pixels.
    t = profile["transform"]
    coarse = Affine(4.0, 0.0, t.c + 10 * 2.0, 0.0, -4.0, t.f - 6 * 2.0)
    image = np.zeros((3, 60, 80), dtype=np.uint8)
    img_path = _write(
        tmp_path / "img.tif",
        image,
        profile,
        transform=coarse,
        dtype="uint8",
        nodata=None,
        width=80,
        height=60,
    )
    pair = read_height_pair(img_path, elevation / "hag.tif", reproject=True, resampling="average")
    blocks = hag[6 : 6 + 120, 10 : 10 + 160].reshape(60, 2, 80, 2).mean(axis=(1, 3))
    assert pair.valid.all()
    np.testing.assert_allclose(pair.target, blocks, rtol=1e-5, atol=1e-4)
    assert pair.image.shape == (3, 60, 80)
    assert pair.transform == coarse


def test_reprojection_across_crs_keeps_nodata_invalid(elevation: Path, tmp_path: Path) -> None:
    dtm, profile = _read(elevation / "dtm.tif")
    dst_crs = rasterio.crs.CRS.from_epsg(32618)
    t = profile["transform"]
    bounds = (t.c, t.f + profile["height"] * t.e, t.c + profile["width"] * t.a, t.f)  # west south east north
    west, south, east, north = transform_bounds(profile["crs"], dst_crs, *bounds)
    width, height = int(np.ceil((east - west) / 2.0)), int(np.ceil((north - south) / 2.0))
    transform = Affine(2.0, 0.0, west, 0.0, -2.0, north)  # 2 m in WGS 84 / UTM 18N, not pixel-aligned
    image = np.full((1, height, width), 100, dtype=np.uint16)
    img_path = _write(
        tmp_path / "utm_wgs84.tif",
        image,
        profile,
        crs=dst_crs,
        transform=transform,
        width=width,
        height=height,
        dtype="uint16",
        nodata=None,
    )
    pair = read_height_pair(img_path, elevation / "dtm.tif", kind="dsm", reproject=True, resampling="nearest")
    valid_src = dtm[dtm != -9999]
    assert pair.target.shape == (height, width)
    # Nearest resampling only copies source values; the nodata patch and the uncovered rim stay invalid.
    assert np.isin(pair.target[pair.valid], valid_src).all()
    assert 0.9 * valid_src.size < pair.valid.sum() < valid_src.size * 1.1
    # Map every image pixel centre back into the DTM: invalid exactly where that DTM pixel is nodata (up to
    # GDAL's approximate transformer at pixel borders) or outside the DTM.
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = rasterio.transform.xy(transform, rows.ravel(), cols.ravel())
    sx, sy = warp_transform(dst_crs, profile["crs"], xs, ys)
    src_rows, src_cols = rasterio.transform.rowcol(t, sx, sy)
    src_rows, src_cols = np.asarray(src_rows), np.asarray(src_cols)
    inside = (src_rows >= 0) & (src_rows < dtm.shape[0]) & (src_cols >= 0) & (src_cols < dtm.shape[1])
    expected = np.zeros(inside.shape, dtype=bool)
    expected[inside] = dtm[src_rows[inside], src_cols[inside]] != -9999
    assert (expected == pair.valid.ravel()).mean() > 0.995
    assert 200 < (inside & ~pair.valid.ravel()).sum() < 350  # the 276-pixel nodata patch
    assert abs(pair.target[pair.valid].mean() - valid_src.mean()) < 0.5
    np.testing.assert_allclose(pair.image, 100 / 65535, rtol=1e-6)  # integer imagery scaled to [0, 1]


def test_all_nodata_and_non_overlapping_targets_fail(elevation: Path, data_dir: Path, tmp_path: Path) -> None:
    dtm, profile = _read(elevation / "dtm.tif")
    empty = _write(tmp_path / "empty.tif", np.full_like(dtm, -9999.0), profile)
    with pytest.raises(ValueError, match="no valid height pixels"):
        read_height_pair(elevation / "dsm.tif", empty)
    # RGB.byte.tif lies ~1500 km south of the elevation tiles: nothing survives reprojection.
    with pytest.raises(ValueError, match="no valid height pixels on the image grid"):
        read_height_pair(data_dir / "geotiff" / "RGB.byte.tif", elevation / "dsm.tif", reproject=True)


def test_dataset_returns_tensors(elevation: Path) -> None:
    def flip(sample: dict) -> dict:
        return {k: torch.flip(v, dims=[-1]) for k, v in sample.items()}

    pairs = [(elevation / "dsm.tif", elevation / "dtm.tif"), (elevation / "dsm.tif", elevation / "hag.tif")]
    ds = HeightPairDataset(pairs, kind="dsm")
    assert len(ds) == 2
    sample = ds[0]
    assert set(sample) == {"image", "target", "valid"}
    assert sample["image"].shape == (1, 259, 283) and sample["image"].dtype == torch.float32
    assert sample["target"].shape == (259, 283) and sample["target"].dtype == torch.float32
    assert sample["valid"].dtype == torch.bool and (~sample["valid"]).sum() == 276
    assert ds[1]["valid"].all()
    flipped = HeightPairDataset(pairs[:1], transform=flip, kind="dsm")[0]
    torch.testing.assert_close(flipped["target"], torch.flip(sample["target"], dims=[-1]))
    with pytest.raises(ValueError, match="at least one"):
        HeightPairDataset([])


def test_image_alone_masks_nodata_and_nan(elevation: Path, tmp_path: Path) -> None:
    """Images read for prediction: nodata and NaN pixels are invalid and zeroed, the rest as in pairs."""
    dsm, profile = _read(elevation / "dsm.tif")
    holed = dsm.copy()
    holed[10:20, 30:50] = -9999.0
    holed[100, 100] = np.nan
    path = _write(tmp_path / "dsm_holed.tif", holed, profile)
    read = read_height_image(path)
    bad = (holed == -9999.0) | np.isnan(holed)
    assert bad.sum() == 201
    np.testing.assert_array_equal(read.valid, ~bad)
    assert (read.image[0][bad] == 0).all()
    np.testing.assert_array_equal(read.image[0][~bad], dsm[~bad])
    assert read.crs.to_epsg() == 26918 and read.transform == profile["transform"]
    pair = read_height_pair(elevation / "dsm.tif", elevation / "hag.tif")
    np.testing.assert_array_equal(read_height_image(elevation / "dsm.tif").image, pair.image)
    with pytest.raises(ValueError, match="cannot read bands"):
        read_height_image(path, image_bands=[2])
    with pytest.raises(FileNotFoundError, match="raster not found"):
        read_height_image(tmp_path / "missing.tif")


def test_datamodule_refuses_mismatched_grids_at_setup(elevation: Path, data_dir: Path) -> None:
    """A pair on different grids fails when the data are set up, naming the difference, not mid-training."""
    from rsvit.datamodules.regression import HeightDataModule

    naip = data_dir / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    data = HeightDataModule([[str(naip), str(elevation / "hag.tif")]], in_chans=4)
    with pytest.raises(GridMismatchError, match="CRS EPSG:26914 != EPSG:26918"):
        data.setup("fit")
    reprojected = HeightDataModule([[str(naip), str(elevation / "hag.tif")]], in_chans=4, reproject=True)
    with pytest.raises(ValueError, match="no valid height pixels on the image grid"):
        reprojected.setup("fit")  # the elevation rasters lie elsewhere: nothing overlaps the NAIP tile
