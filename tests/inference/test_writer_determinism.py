"""Half-float COGs get the same bytes whatever memory GDAL is handed while writing them.

GDAL's COG driver leaves the part of a partial edge tile beyond the raster edge uninitialised in every
band of a half-float (NBITS=16), pixel-interleaved raster but the last one. glibc's ``MALLOC_PERTURB_``
makes every heap allocation of a child process start filled with a non-zero byte (and
``MALLOC_MMAP_THRESHOLD_`` keeps GDAL's 1 MiB blocks on the heap), which is the worst case of a process
that ran other work before: the written files must still equal the ones written here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import rasterio

from rsvit.inference import edge_tiles
from rsvit.inference.writer import clear_edge_padding, to_cog

# 600 x 530 in tiles of 512: three partial tiles at full resolution, and a partial overview tile
WIDTH, HEIGHT, BANDS = 600, 530, 3

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from rsvit.inference import writer

    partial, raw, fixed = map(Path, sys.argv[1:])
    writer.to_cog(partial, fixed, resampling="average")
    writer.clear_edge_padding = lambda path, options: False  # GDAL's file as it comes out of the driver
    writer.to_cog(partial, raw, resampling="average")
    """
)


def _half_float_partial(path):
    values = np.random.default_rng(3).random((BANDS, HEIGHT, WIDTH)).astype(np.float16).astype(np.float32)
    values[:, :5, :9] = np.nan  # nodata pixels go through unchanged
    profile = {
        "driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": BANDS, "dtype": "float32",
        "nodata": float("nan"), "nbits": 16, "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "zstd", "crs": "EPSG:32614", "transform": rasterio.Affine(2.0, 0, 5e5, 0, -2.0, 4e6),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values)
    return values


def _tiles(path):
    """Every tile of every level, decompressed, with the size of its part inside the raster."""
    with open(path, "rb") as f:
        tiff = edge_tiles._Tiff.read(f)
        for ifd in range(len(tiff.ifds)):
            width, height = tiff.ints(f, ifd, 256)[0], tiff.ints(f, ifd, 257)[0]
            across = -(-width // 512)
            offsets, sizes = tiff.ints(f, ifd, 324), tiff.ints(f, ifd, 325)
            for index, (offset, size) in enumerate(zip(offsets, sizes, strict=True)):
                f.seek(offset)
                tile = np.frombuffer(zlib.decompress(f.read(size)), np.uint16).reshape(512, 512, BANDS)
                row, col = divmod(index, across)
                yield tile, min(512, height - row * 512), min(512, width - col * 512)


def test_half_float_cog_bytes_do_not_depend_on_the_memory_gdal_gets(tmp_path):
    partial = tmp_path / "partial.tif"
    values = _half_float_partial(partial)
    here, raw, fixed = tmp_path / "here.tif", tmp_path / "raw.tif", tmp_path / "fixed.tif"
    to_cog(partial, here, resampling="average")

    env = {**os.environ, "MALLOC_PERTURB_": "90", "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}
    args = [sys.executable, "-c", CHILD, str(partial), str(raw), str(fixed)]
    subprocess.run(args, env=env, check=True, timeout=120)

    assert fixed.read_bytes() == here.read_bytes()
    levels = list(_tiles(here))
    assert len(levels) == 5  # 4 full-resolution tiles and 1 overview tile, 4 of them partial
    for tile, h, w in levels:
        padding = np.ones(tile.shape[:2], bool)
        padding[:h, :w] = False
        assert not tile[padding].any(), "samples beyond the raster edge must be zeros"

    # GDAL's own file holds the same pixels; clearing its edge tiles gives exactly the file written here
    with rasterio.open(raw) as a, rasterio.open(here) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
        assert np.array_equal(b.read(), values, equal_nan=True)
        assert str(a.profile) == str(b.profile) and a.tags() == b.tags()  # str: the nodata is NaN
        assert a.overviews(1) == b.overviews(1) == [2]
    clear_edge_padding(raw, {"compress": "deflate"})
    assert raw.read_bytes() == here.read_bytes()


def test_clearing_a_clean_file_changes_nothing(tmp_path):
    partial = tmp_path / "partial.tif"
    _half_float_partial(partial)
    out = tmp_path / "out.tif"
    to_cog(partial, out, resampling="average")
    before = out.read_bytes()
    assert clear_edge_padding(out, {"compress": "deflate"}) is False  # already zeros: encoded alike
    assert out.read_bytes() == before
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"
