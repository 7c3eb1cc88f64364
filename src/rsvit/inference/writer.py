"""Writing prediction maps: partial GeoTIFFs during the run, Cloud-Optimized GeoTIFFs at the end.

During a run, finished cells go into *partial* files beside the output (hidden names starting with the
output's name): tiled, ZSTD-compressed, sparse GeoTIFFs on the input's grid, flushed after every strip,
plus a small JSON state file recording how many strips are on disk. That is what ``resume`` continues
from. At the end GDAL's ``COG`` driver copies each partial file to a temporary name in the output folder
(tiles of 512, DEFLATE, overviews) which is then renamed onto the final name, so a crash or Ctrl-C never
leaves a half-written file under the final name.

What the files hold (bands, data type, nodata, names, colours) is the output kind's business
(:mod:`rsvit.inference.outputs`): it describes each partial file as a :class:`PartialMap` and turns
every blended cell into the arrays to write.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsvit.utils.atomic import atomic_path
from rsvit.viz.palettes import default_palette

__all__ = [
    "MapSink",
    "PartialFiles",
    "PartialMap",
    "clear_edge_padding",
    "copy_rows",
    "default_palette",
    "read_state",
    "to_cog",
    "write_categories",
    "write_state",
]

_STATE_FORMAT = "rsvit-predict-raster-partial"


@dataclass(frozen=True)
class PartialFiles:
    """Names of the partial files of one output (``tag`` distinguishes the shares of several processes)."""

    output: Path
    tag: str = ""

    def _name(self, suffix: str) -> Path:
        return self.output.with_name(f".{self.output.name}{self.tag}.{suffix}")

    @property
    def main(self) -> Path:
        return self._name("partial.tif")

    @property
    def probabilities(self) -> Path:
        return self._name("partial-probabilities.tif")

    @property
    def state(self) -> Path:
        return self._name("partial.json")

    @property
    def objects(self) -> Path:
        """Objects of vector kinds (e.g. a detector's boxes), one JSON line per window."""
        return self._name("partial-objects.jsonl")

    def remove(self) -> None:
        for path in (self.main, self.probabilities, self.objects, self.state):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            for aux in path.parent.glob(f"{path.name}.aux.xml"):
                aux.unlink()


def read_state(path: Path) -> dict[str, Any] | None:
    """The progress a previous run recorded, or ``None`` when it is missing, damaged or of another format."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a damaged state file means nothing can be trusted: start over
    return state if isinstance(state, dict) and state.get("format") == _STATE_FORMAT else None


def write_state(path: Path, fingerprint: dict[str, Any], strips_done: int, n_strips: int) -> None:
    """Records progress atomically (temp file + rename), after the data it describes is on disk."""
    state = {
        "format": _STATE_FORMAT,
        "fingerprint": fingerprint,
        "strips_done": strips_done,
        "n_strips": n_strips,
    }
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


_PARTIAL_OPTIONS = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "zstd",
    "zstd_level": 1,
    "sparse_ok": True,
    "bigtiff": "if_safer",
}


@dataclass(frozen=True)
class PartialMap:
    """One partial GeoTIFF on the input's grid: its bands, and the names and colours to record in it."""

    path: Path
    count: int
    dtype: str
    nodata: float
    nbits: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    descriptions: tuple[str, ...] = ()
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    scales: tuple[float, ...] | None = None

    def profile(self, grid: dict[str, Any]) -> dict[str, Any]:
        extra = {} if self.nbits is None else {"nbits": self.nbits}
        return {
            **_PARTIAL_OPTIONS,
            **grid,
            "count": self.count,
            "dtype": self.dtype,
            "nodata": self.nodata,
            **extra,
        }


# encode(blended (C, h, w) float32, invalid (h, w) bool or None) -> one array per map, (h, w) or (bands, h, w)
EncodeFn = Callable[[np.ndarray, np.ndarray | None], Sequence[np.ndarray]]


class MapSink:
    """Receives finished cells (see :class:`~rsvit.inference.blend.BlendAccumulator`) and writes the maps.

    ``encode`` turns a blended cell into the arrays of ``maps``, in order. ``create=True`` creates the
    partial files (replacing any); otherwise they are reopened to continue.
    """

    def __init__(
        self, maps: Sequence[PartialMap], grid: dict[str, Any], encode: EncodeFn, create: bool = True
    ) -> None:
        self.maps = list(maps)
        self.encode = encode
        self._grid = grid
        self._open: dict[str, Any] = {}
        if create:
            self._create()

    def _create(self) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        for partial in self.maps:
            with warnings.catch_warnings():
                # an input without a CRS has been reported once, in words, by the engine
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dst = rasterio.open(partial.path, "w", **partial.profile(self._grid))
            with dst:
                if partial.tags:
                    dst.update_tags(**partial.tags)
                for band, name in enumerate(partial.descriptions, start=1):
                    dst.set_band_description(band, name)
                if partial.colormap is not None:
                    dst.write_colormap(1, partial.colormap)
                if partial.scales is not None:
                    dst.scales = partial.scales

    def _dataset(self, path: Path) -> Any:
        key = str(path)
        if key not in self._open:
            import rasterio

            self._open[key] = rasterio.open(path, "r+")
        return self._open[key]

    def write(
        self, r0: int, r1: int, c0: int, c1: int, blended: np.ndarray, valid: np.ndarray | None
    ) -> None:
        from rasterio.windows import Window

        window = Window(c0, r0, c1 - c0, r1 - r0)
        arrays = self.encode(blended, None if valid is None else ~valid)
        for partial, array in zip(self.maps, arrays, strict=True):
            if array.ndim == 2:
                self._dataset(partial.path).write(array, 1, window=window)
            else:
                self._dataset(partial.path).write(array, window=window)

    def flush(self) -> None:
        """Closes the open files so that everything written so far is on disk (called after each strip)."""
        while self._open:
            _, dataset = self._open.popitem()
            dataset.close()

    close = flush

    def paths(self) -> list[Path]:
        return [partial.path for partial in self.maps]


def to_cog(
    partial: Path,
    output: Path,
    *,
    resampling: str,
    compress: str = "deflate",
    extra: dict[str, Any] | None = None,
) -> None:
    """Copies a partial GeoTIFF to a Cloud-Optimized GeoTIFF under ``output``, atomically.

    GDAL's ``COG`` driver writes the tiles, the overviews and the layout (header and overviews first);
    it works block by block, so memory stays bounded whatever the raster size. Half-float rasters of
    several bands then get their edge tiles rewritten (:func:`clear_edge_padding`), so that the file's
    bytes depend on its pixels only.
    """
    import rasterio
    import rasterio.shutil

    options: dict[str, Any] = {
        "compress": compress,
        "blocksize": 512,
        "overview_resampling": resampling,
        "bigtiff": "if_safer",
        "num_threads": 2,
        **(extra or {}),
    }
    with rasterio.open(partial) as src:
        if src.dtypes[0] == "float32" and src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16":
            options["nbits"] = 16  # float16 probabilities: half floats on disk
        elif src.dtypes[0] == "float32" and compress in ("deflate", "zstd", "lzw"):
            options["predictor"] = 3  # floating-point predictor: much better compression of smooth values
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.tif")
    try:
        rasterio.shutil.copy(partial, tmp, driver="COG", **options)
        if options.get("nbits") == 16:
            clear_edge_padding(tmp, _tile_options(options))
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


# Edge tiles of half-float COGs. GDAL (3.10, and its source to date) copies a pixel-interleaved raster
# of half floats (NBITS=16) into a COG through its block cache, and of a partial tile at the right or
# bottom edge only the last band's buffer is cleared: the other bands' part beyond the raster edge keeps
# whatever malloc returned, which depends on what ran before in the process. Readers never see those
# samples, but they are compressed into the file, so two runs writing the same pixels could write
# different bytes. The edge tiles are encoded again, by GDAL, with zeros beyond the edge: the bytes a
# process whose memory happened to be zeroed writes.

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
_UINT_FORMATS = {3: "H", 4: "I", 16: "Q"}
_NEW_SUBFILE_TYPE, _WIDTH, _HEIGHT, _BITS, _SAMPLES, _PLANAR = 254, 256, 257, 258, 277, 284
_TILE_WIDTH, _TILE_HEIGHT, _TILE_OFFSETS, _TILE_BYTES, _SAMPLE_FORMAT = 322, 323, 324, 325, 339
_LEVEL_OPTIONS = {"deflate": "zlevel", "zstd": "zstd_level", "lzma": "lzma_preset"}


def _tile_options(cog_options: dict[str, Any]) -> dict[str, Any]:
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


def copy_rows(source: Path, target: Path, r0: int, r1: int, chunk: int = 256) -> None:
    """Copies rows ``[r0, r1)`` of every band from one partial file into another on the same grid."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source) as src, rasterio.open(target, "r+") as dst:
        for start in range(r0, r1, chunk):
            window = Window(0, start, src.width, min(chunk, r1 - start))
            dst.write(src.read(window=window), window=window)


# GDAL's raster attribute table codes (gdal.h): field types and usages
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE = 2, 5, 6, 7, 8


def write_categories(
    raster: Path, names: Sequence[str], colours: Sequence[Sequence[int]] | None = None, band: int = 1
) -> Path:
    """Writes class names for GIS tools into the PAM sidecar ``<raster>.aux.xml`` GDAL reads.

    Rasterio cannot set GDAL category names or attribute tables, and GeoTIFF has no tag for them: GDAL
    itself keeps them in this sidecar. Both are written: category names (``gdalinfo`` lists them, QGIS
    labels the paletted classes with them) and a thematic attribute table of value, class and colour.
    """
    import xml.etree.ElementTree as ET

    root = ET.Element("PAMDataset")
    pam_band = ET.SubElement(root, "PAMRasterBand", band=str(band))
    categories = ET.SubElement(pam_band, "CategoryNames")
    for name in names:
        ET.SubElement(categories, "Category").text = str(name)
    table = ET.SubElement(pam_band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [("Value", _GFT_INTEGER, _GFU_MINMAX), ("Class", _GFT_STRING, _GFU_NAME)]
    if colours is not None:
        fields += [("Red", _GFT_INTEGER, _GFU_RED), ("Green", _GFT_INTEGER, _GFU_GREEN)]
        fields += [("Blue", _GFT_INTEGER, _GFU_BLUE)]
    for index, (name, kind, usage) in enumerate(fields):
        field_defn = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(field_defn, "Name").text = name
        ET.SubElement(field_defn, "Type").text = str(kind)
        ET.SubElement(field_defn, "Usage").text = str(usage)
    for value, name in enumerate(names):
        row = ET.SubElement(table, "Row", index=str(value))
        cells = [str(value), str(name)]
        if colours is not None:
            cells += [str(int(v)) for v in colours[value][:3]]
        for cell in cells:
            ET.SubElement(row, "F").text = cell
    ET.indent(root)
    sidecar = raster.with_name(f"{raster.name}.aux.xml")
    tmp = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=False)
        os.replace(tmp, sidecar)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return sidecar
