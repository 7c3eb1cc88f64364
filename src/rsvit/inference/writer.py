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
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsvit.inference.edge_tiles import clear_edge_padding, tile_options
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
            clear_edge_padding(tmp, tile_options(options))
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


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
