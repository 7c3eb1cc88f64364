"""Writing prediction maps: partial GeoTIFFs during the run, Cloud-Optimized GeoTIFFs at the end.

During a run, finished cells go into *partial* files beside the output (hidden names starting with the
output's name): tiled, ZSTD-compressed, sparse GeoTIFFs on the input's grid, flushed after every strip,
plus a small JSON state file recording how many strips are on disk. That is what ``resume`` continues
from. At the end GDAL's ``COG`` driver copies each partial file to a temporary name in the output folder
(tiles of 512, DEFLATE, overviews) which is then renamed onto the final name, so a crash or Ctrl-C never
leaves a half-written file under the final name.

Outputs:

* class map: ``uint8`` class indices (``uint16`` beyond 255 classes), nodata ``255`` (``65535``) where the
  input was nodata, colour table from the palette (``WeightsMetadata.extra["palette"]``: one ``[r, g, b]``
  per class, 0-255; a fixed palette otherwise), class names in the ``CLASSES`` tag (JSON list);
* probabilities (optional), one band per class, named after the class: ``uint8`` holds ``round(p * 254)``
  (scale ``1/254`` recorded in the file, nodata 255) or ``float16`` holds ``p`` (nodata NaN);
* regression models write one ``float32`` band of values, nodata NaN.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsvit.data.segmentation import default_palette

__all__ = [
    "MapSink",
    "OutputLayout",
    "PartialFiles",
    "default_palette",
    "read_state",
    "to_cog",
    "write_state",
]

_STATE_FORMAT = "rsvit-predict-raster-partial"
PROBABILITY_DTYPES = ("uint8", "float16")


def check_palette(palette: Any, n: int) -> list[tuple[int, int, int]]:
    """Validates a palette from metadata: at least ``n`` ``[r, g, b]`` triples of 0-255 integers."""
    try:
        colours = [tuple(int(v) for v in c) for c in palette]
    except (TypeError, ValueError):
        raise ValueError(f"the palette must be a list of [r, g, b] triples, got {palette!r}") from None
    if len(colours) < n or any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in colours):
        raise ValueError(
            f"the palette must hold one [r, g, b] triple (0-255) per class ({n} classes), got {palette!r}"
        )
    return colours[:n]  # type: ignore[return-value]


@dataclass(frozen=True)
class OutputLayout:
    """What the maps hold: ``kind`` is ``classes`` (segmentation, change) or ``values`` (regression)."""

    kind: str
    channels: int
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    probabilities: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("classes", "values"):
            raise ValueError(f"kind must be 'classes' or 'values', got {self.kind!r}")
        if self.probabilities not in (None, *PROBABILITY_DTYPES):
            raise ValueError(
                f"probabilities must be one of {', '.join(PROBABILITY_DTYPES)} (or None), got "
                f"{self.probabilities!r}"
            )
        if self.kind == "values" and self.probabilities is not None:
            raise ValueError("probabilities exist only for class maps; this model predicts values")

    @property
    def n_classes(self) -> int:
        return 2 if self.channels == 1 else self.channels  # one channel: a binary logit

    @property
    def class_dtype(self) -> str:
        return "uint8" if self.n_classes <= 255 else "uint16"

    @property
    def class_nodata(self) -> int:
        return 255 if self.class_dtype == "uint8" else 65535

    def class_names(self) -> tuple[str, ...]:
        return self.classes or tuple(f"class_{i}" for i in range(self.n_classes))


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

    def remove(self) -> None:
        for path in (self.main, self.probabilities, self.state):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            for aux in path.parent.glob(f"{path.name}.aux.xml"):
                aux.unlink()


def read_state(path: Path) -> dict[str, Any] | None:
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


def channel_argmax(values: np.ndarray, dtype: str = "uint8") -> np.ndarray:
    """Index of the largest channel per pixel (first one on ties); one channel means a binary logit.

    A running maximum over the channel planes, several times faster than ``argmax(axis=0)`` (which
    reduces across strided planes) on the engine's hottest path.
    """
    if values.shape[0] == 1:
        return (values[0] > 0).astype(dtype)
    if values.shape[0] == 2:
        return (values[1] > values[0]).astype(dtype)
    best = values[0].copy()
    index = np.zeros(values.shape[1:], dtype=dtype)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        index[better] = c
        np.maximum(best, values[c], out=best)
    return index


def softmax_channels(values: np.ndarray) -> np.ndarray:
    """Softmax over the first axis, stable (the maximum is subtracted first)."""
    out = values - values.max(axis=0, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=0, keepdims=True)
    return out


class MapSink:
    """Receives finished cells (see :class:`~rsvit.inference.blend.BlendAccumulator`) and writes the maps.

    ``create=True`` creates the partial files (replacing any); otherwise they are reopened to continue.
    """

    def __init__(self, files: PartialFiles, grid: dict[str, Any], layout: OutputLayout, create: bool = True):
        self.files = files
        self.layout = layout
        self._grid = grid
        self._open: dict[str, Any] = {}
        if create:
            self._create()

    def _profiles(self) -> dict[Path, dict[str, Any]]:
        base = {**_PARTIAL_OPTIONS, **self._grid}
        layout = self.layout
        if layout.kind == "values":
            return {self.files.main: {**base, "count": 1, "dtype": "float32", "nodata": float("nan")}}
        out = {
            self.files.main: {**base, "count": 1, "dtype": layout.class_dtype, "nodata": layout.class_nodata}
        }
        if layout.probabilities == "uint8":
            out[self.files.probabilities] = {
                **base,
                "count": layout.n_classes,
                "dtype": "uint8",
                "nodata": 255,
            }
        elif layout.probabilities == "float16":
            out[self.files.probabilities] = {
                **base,
                "count": layout.n_classes,
                "dtype": "float32",
                "nbits": 16,
                "nodata": float("nan"),
            }
        return out

    def _create(self) -> None:
        import rasterio

        layout = self.layout
        for path, profile in self._profiles().items():
            with rasterio.open(path, "w", **profile) as dst:
                if layout.kind == "values":
                    dst.set_band_description(1, "value")
                    continue
                names = layout.class_names()
                dst.update_tags(CLASSES=json.dumps(list(names)))
                if path == self.files.main:
                    dst.set_band_description(1, "class")
                    if layout.class_dtype == "uint8" and layout.palette is not None:
                        dst.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(layout.palette)})
                else:
                    for band, name in enumerate(names, start=1):
                        dst.set_band_description(band, name)
                    if layout.probabilities == "uint8":
                        dst.scales = (1.0 / 254.0,) * layout.n_classes

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
        layout = self.layout
        invalid = None if valid is None else ~valid
        if layout.kind == "values":
            values = blended[0].copy()
            if invalid is not None:
                values[invalid] = np.nan
            self._dataset(self.files.main).write(values, 1, window=window)
            return
        classes = channel_argmax(blended, layout.class_dtype)
        if invalid is not None:
            classes[invalid] = layout.class_nodata
        self._dataset(self.files.main).write(classes, 1, window=window)
        if layout.probabilities is None:
            return
        if layout.channels == 1:
            p1 = 1.0 / (1.0 + np.exp(-blended[0]))
            probs = np.stack([1.0 - p1, p1]).astype(np.float32)
        else:
            probs = softmax_channels(blended)
        if layout.probabilities == "uint8":
            out = np.rint(probs * 254.0).astype(np.uint8)
            if invalid is not None:
                out[:, invalid] = 255
        else:
            out = probs.astype(np.float16).astype(np.float32)
            if invalid is not None:
                out[:, invalid] = np.nan
        self._dataset(self.files.probabilities).write(out, window=window)

    def flush(self) -> None:
        """Closes the open files so that everything written so far is on disk (called after each strip)."""
        while self._open:
            _, dataset = self._open.popitem()
            dataset.close()

    close = flush

    def paths(self) -> list[Path]:
        return list(self._profiles())


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
    it works block by block, so memory stays bounded whatever the raster size.
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


def probabilities_path(output: Path) -> Path:
    """``map.tif`` -> ``map_probabilities.tif`` (the probability map beside the class map)."""
    return output.with_name(f"{output.stem}_probabilities{output.suffix or '.tif'}")
