"""Edge tiles of half-float COGs, encoded again with zeros beyond the raster edge.

GDAL (3.10, and its source to date) copies a pixel-interleaved raster
of half floats (NBITS=16) into a COG through its block cache, and of a partial tile at the right or
bottom edge only the last band's buffer is cleared: the other bands' part beyond the raster edge keeps
whatever malloc returned, which depends on what ran before in the process. Readers never see those
samples, but they are compressed into the file, so two runs writing the same pixels could write
different bytes. The edge tiles are encoded again, by GDAL, with zeros beyond the edge: the bytes a
process whose memory happened to be zeroed writes.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsvit.utils.atomic import atomic_path

__all__ = ["clear_edge_padding", "tile_options"]


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
_UINT_FORMATS = {3: "H", 4: "I", 16: "Q"}
_NEW_SUBFILE_TYPE, _WIDTH, _HEIGHT, _BITS, _SAMPLES, _PLANAR = 254, 256, 257, 258, 277, 284
_TILE_WIDTH, _TILE_HEIGHT, _TILE_OFFSETS, _TILE_BYTES, _SAMPLE_FORMAT = 322, 323, 324, 325, 339
_LEVEL_OPTIONS = {"deflate": "zlevel", "zstd": "zstd_level", "lzma": "lzma_preset"}


def tile_options(cog_options: dict[str, Any]) -> dict[str, Any]:
    """The GeoTIFF creation options that encode a tile as the COG driver did with ``cog_options``."""
    compress = str(cog_options.get("compress", "none")).lower()
    options: dict[str, Any] = {"compress": compress}
    if cog_options.get("level") is not None and compress in _LEVEL_OPTIONS:
        options[_LEVEL_OPTIONS[compress]] = cog_options["level"]
    if cog_options.get("predictor") is not None:
        options["predictor"] = cog_options["predictor"]
    return options


@dataclass
class _Tiff:
    """The directories of a TIFF file: per directory, tag -> (field type, count, position of the values)."""

    order: str
    big: bool
    ifds: list[dict[int, tuple[int, int, int]]]

    @classmethod
    def read(cls, f: Any) -> _Tiff | None:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            return None
        big = struct.unpack(order + "H", head[2:4])[0] == 43
        word, count_format = ("Q", "Q") if big else ("I", "H")
        entry, inline = (20, 8) if big else (12, 4)
        offset = struct.unpack(order + word, head[8:16] if big else head[4:8])[0]
        ifds: list[dict[int, tuple[int, int, int]]] = []
        while offset and len(ifds) < 1000:
            f.seek(offset)
            n = struct.unpack(order + count_format, f.read(struct.calcsize(count_format)))[0]
            first = offset + struct.calcsize(count_format)
            raw = f.read(n * entry + inline)
            tags = {}
            for i in range(n):
                e = raw[i * entry : (i + 1) * entry]
                tag, kind = struct.unpack(order + "HH", e[:4])
                count = struct.unpack(order + word, e[4 : 4 + inline])[0]
                value = first + i * entry + 4 + inline
                if _TYPE_SIZES.get(kind, 1) * count > inline:
                    value = struct.unpack(order + word, e[4 + inline :])[0]
                tags[tag] = (kind, count, value)
            ifds.append(tags)
            offset = struct.unpack(order + word, raw[n * entry :])[0]
        return cls(order, big, ifds)

    def ints(self, f: Any, ifd: int, tag: int, default: int | None = None) -> list[int]:
        if tag not in self.ifds[ifd]:
            return [] if default is None else [default]
        kind, count, position = self.ifds[ifd][tag]
        fmt = _UINT_FORMATS[kind]
        f.seek(position)
        return list(struct.unpack(f"{self.order}{count}{fmt}", f.read(count * struct.calcsize(fmt))))


def _encode_tile(values: np.ndarray, block: tuple[int, int], options: dict[str, Any]) -> bytes:
    """GDAL's bytes for one half-float tile holding ``values`` (bands, h, w) and zeros beyond them."""
    import io

    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    bands, h, w = values.shape
    tile = np.zeros((bands, block[1], block[0]), np.float32)
    tile[:, :h, :w] = values
    with MemoryFile() as memory:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dst = memory.open(
                driver="GTiff", width=block[0], height=block[1], count=bands, dtype="float32", nbits=16,
                tiled=True, blockxsize=block[0], blockysize=block[1], interleave="pixel", **options,
            )  # fmt: skip
        with dst:
            dst.write(tile)
        data = memory.read()
    f = io.BytesIO(data)
    tiff = _Tiff.read(f)
    assert tiff is not None
    (offset,), (size,) = tiff.ints(f, 0, _TILE_OFFSETS), tiff.ints(f, 0, _TILE_BYTES)
    return data[offset : offset + size]


def _edge_tiles(
    path: Path, tiff: _Tiff, f: Any, options: dict[str, Any]
) -> dict[tuple[int, int], bytes] | None:
    """(directory, tile) -> new bytes, for the partial tiles of every half-float, multi-band level.

    ``None`` when the directories are not the raster's levels in GDAL's order (full resolution, then
    the overviews, masks anywhere).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window

    new: dict[tuple[int, int], bytes] = {}
    level = -1
    for ifd in range(len(tiff.ifds)):
        if tiff.ints(f, ifd, _NEW_SUBFILE_TYPE, 0)[0] & 4:
            continue  # a mask: one 8-bit band, written from a cleared buffer
        level += 1
        half = tiff.ints(f, ifd, _BITS)[:1] == [16] and tiff.ints(f, ifd, _SAMPLE_FORMAT)[:1] == [3]
        samples = tiff.ints(f, ifd, _SAMPLES, 1)[0]
        interleaved = tiff.ints(f, ifd, _PLANAR, 1)[0] == 1 and _TILE_WIDTH in tiff.ifds[ifd]
        if not (half and samples > 1 and interleaved):
            continue
        width, height = tiff.ints(f, ifd, _WIDTH)[0], tiff.ints(f, ifd, _HEIGHT)[0]
        bw, bh = tiff.ints(f, ifd, _TILE_WIDTH)[0], tiff.ints(f, ifd, _TILE_HEIGHT)[0]
        across, down = -(-width // bw), -(-height // bh)
        edge = [
            (row, col)
            for row in range(down)
            for col in range(across)
            if (col == across - 1 and width % bw) or (row == down - 1 and height % bh)
        ]
        if not edge:
            continue
        extra = {} if level == 0 else {"overview_level": level - 1}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a grid without a CRS is fine here
            src = rasterio.open(path, **extra)
        with src:
            if (src.width, src.height, src.count) != (width, height, samples):
                return None
            for row, col in edge:
                x, y = col * bw, row * bh
                window = Window(x, y, min(bw, width - x), min(bh, height - y))
                new[(ifd, row * across + col)] = _encode_tile(src.read(window=window), (bw, bh), options)
    return new


def clear_edge_padding(path: Path, options: dict[str, Any]) -> bool:
    """Encodes the edge tiles of a half-float COG again with zeros beyond the raster edge (see above).

    ``options`` are the GeoTIFF creation options the tiles were compressed with (compression, level,
    predictor). The COG layout is kept: directories first, then every tile with GDAL's size leader and
    trailer, in the same order; only the offsets and sizes of the tiles change. Returns whether the
    file changed. A file whose layout is not the one GDAL's COG driver writes is left as it is.
    """
    with open(path, "rb") as f:
        tiff = _Tiff.read(f)
        if tiff is None:
            return False
        f.seek(0)
        ghost = f.read(1024)
        leader = 4 if b"BLOCK_LEADER=SIZE_AS_UINT4" in ghost else 0
        trailer = 4 if b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED" in ghost else 0
        new = _edge_tiles(path, tiff, f, options)
        if new is None:
            return False
        tiles = []  # (offset, size, directory, tile index)
        for ifd in range(len(tiff.ifds)):
            offsets, sizes = tiff.ints(f, ifd, _TILE_OFFSETS), tiff.ints(f, ifd, _TILE_BYTES)
            tiles += [(o, n, ifd, i) for i, (o, n) in enumerate(zip(offsets, sizes, strict=True)) if n]
        tiles.sort()
        changed = []
        for offset, size, ifd, index in tiles:
            if (ifd, index) in new:
                f.seek(offset)
                changed.append(f.read(size) != new[(ifd, index)])
        if not any(changed):
            return False
        f.seek(0, os.SEEK_END)
        end = f.tell()
        start = tiles[0][0] - leader
        position = start
        for offset, size, _, _ in tiles:
            if offset - leader != position:
                return False  # not GDAL's contiguous COG data section: leave the file alone
            position = offset + size + trailer
        if position != end:
            return False
        grown = sum(len(new[(ifd, i)]) - size for _, size, ifd, i in tiles if (ifd, i) in new)
        if not tiff.big and end + grown >= 2**32:
            return False  # offsets would not fit a classic TIFF

        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            f.seek(0)
            out.write(f.read(start))
            where: dict[tuple[int, int], tuple[int, int]] = {}
            for offset, size, ifd, index in tiles:
                if (ifd, index) in new:
                    data = new[(ifd, index)]
                else:
                    f.seek(offset)
                    data = f.read(size)
                if leader:
                    out.write(struct.pack("<I", len(data)))
                where[(ifd, index)] = (out.tell(), len(data))
                out.write(data)
                if trailer:
                    out.write(data[-4:])
            for ifd in range(len(tiff.ifds)):
                for tag, part in ((_TILE_OFFSETS, 0), (_TILE_BYTES, 1)):
                    if tag not in tiff.ifds[ifd]:
                        continue
                    kind, count, value = tiff.ifds[ifd][tag]
                    values = [
                        where[(ifd, i)][part] if (ifd, i) in where else v
                        for i, v in enumerate(tiff.ints(f, ifd, tag))
                    ]
                    out.seek(value)
                    out.write(struct.pack(f"{tiff.order}{count}{_UINT_FORMATS[kind]}", *values))
    return True
