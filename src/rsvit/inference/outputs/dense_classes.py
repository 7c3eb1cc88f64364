"""Class maps (segmentation, change): class indices, optional probabilities, optional polygons.

Channels are the model's classes (one channel: a binary logit, two classes). Files written:

* class map: ``uint8`` class indices (``uint16`` beyond 255 classes), nodata ``255`` (``65535``) where the
  input was nodata, colour table from the palette (see :func:`display_palette`), class names in the
  ``CLASSES`` tag (JSON list) and as GDAL category names with a raster attribute table (value, class,
  colour) in the PAM sidecar ``<map>.aux.xml``, which ``gdalinfo`` and QGIS show;
* probabilities (optional, ``<output>_probabilities.tif`` unless named), one band per class, named after
  the class: ``uint8`` holds ``round(p * 254)`` (scale ``1/254`` recorded in the file, nodata 255) or
  ``float16`` holds ``p`` (nodata NaN);
* polygons per class (optional GeoJSON), traced from the final class map
  (:func:`~rsvit.inference.vector.polygonize_raster`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rsvit.inference.outputs.base import ModelFacts, OutputRequest, Products
from rsvit.inference.outputs.dense import DenseOutput, probe_channels
from rsvit.inference.outputs.registry import register_output
from rsvit.inference.writer import PartialFiles, PartialMap, to_cog, write_categories
from rsvit.viz.palettes import default_palette, is_ambiguous

__all__ = [
    "PROBABILITY_DTYPES",
    "ClassMapOutput",
    "channel_argmax",
    "check_palette",
    "display_palette",
    "softmax_channels",
]

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


def display_palette(
    extra: dict[str, Any], classes: Sequence[str] | None, n: int
) -> list[tuple[int, int, int]]:
    """The colours of the map's colour table.

    ``extra["display_palette"]`` when the model file sets one (a config's choice, taken as given); else
    the dataset's ``extra["palette"]`` unless two of its colours are hard to tell apart (the Dubai set's
    gold water and yellow vegetation); else a land-cover palette chosen by class name (water blue,
    vegetation green...), distinct tab20 colours for other names.
    """
    if "display_palette" in extra:
        return check_palette(extra["display_palette"], n)
    if "palette" in extra:
        palette = check_palette(extra["palette"], n)
        if not is_ambiguous(palette):
            return palette
    return default_palette(n, names=classes)


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


def probabilities_path(output: Path) -> Path:
    """``map.tif`` -> ``map_probabilities.tif`` (the probability map beside the class map)."""
    return output.with_name(f"{output.stem}_probabilities{output.suffix or '.tif'}")


def _class_channels(facts: ModelFacts) -> int:
    if facts.spec is not None:
        return int(facts.spec.num_classes)
    num = getattr(facts.model, "num_classes", None)
    if isinstance(num, int):
        return num
    classes = getattr(facts.meta, "classes", None)
    if classes:
        return len(classes)
    return probe_channels(facts)


@register_output
@dataclass(frozen=True)
class ClassMapOutput(DenseOutput):
    """One class index per pixel, nodata where the input was; optionally probabilities and polygons."""

    tasks: ClassVar[dict[str, int]] = {"segmentation": 1, "change": 2}

    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    probabilities: str | None = None

    def __post_init__(self) -> None:
        if self.probabilities not in (None, *PROBABILITY_DTYPES):
            raise ValueError(
                f"probabilities must be one of {', '.join(PROBABILITY_DTYPES)} (or None), got "
                f"{self.probabilities!r}"
            )

    @classmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> ClassMapOutput:
        channels = _class_channels(facts)
        n_classes = 2 if channels == 1 else channels
        classes = getattr(facts.meta, "classes", None)
        if classes is not None and len(classes) != n_classes:
            raise ValueError(f"the metadata names {len(classes)} classes but the model predicts {n_classes}")
        palette = display_palette(dict(getattr(facts.meta, "extra", None) or {}), classes, n_classes)
        return cls(
            channels=channels,
            classes=tuple(classes) if classes else None,
            palette=tuple(palette) if palette else None,
            probabilities=request.probabilities,
        )

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

    def fingerprint(self) -> dict[str, Any]:
        return {"channels": self.channels, "probabilities": self.probabilities}

    def partial_maps(self, files: PartialFiles) -> list[PartialMap]:
        tags = {"CLASSES": json.dumps(list(self.class_names()))}
        colormap = None
        if self.class_dtype == "uint8" and self.palette is not None:
            colormap = {i: (*rgb, 255) for i, rgb in enumerate(self.palette)}
        maps = [
            PartialMap(
                files.main,
                count=1,
                dtype=self.class_dtype,
                nodata=self.class_nodata,
                tags=tags,
                descriptions=("class",),
                colormap=colormap,
            )
        ]
        if self.probabilities is not None:
            as_bytes = self.probabilities == "uint8"  # else float16 values, stored as 16-bit floats
            maps.append(
                PartialMap(
                    files.probabilities,
                    count=self.n_classes,
                    dtype="uint8" if as_bytes else "float32",
                    nodata=255 if as_bytes else float("nan"),
                    nbits=None if as_bytes else 16,
                    tags=tags,
                    descriptions=self.class_names(),
                    scales=(1.0 / 254.0,) * self.n_classes if as_bytes else None,
                )
            )
        return maps

    def encode(self, blended: np.ndarray, invalid: np.ndarray | None) -> Sequence[np.ndarray]:
        classes = channel_argmax(blended, self.class_dtype)
        if invalid is not None:
            classes[invalid] = self.class_nodata
        if self.probabilities is None:
            return [classes]
        if self.channels == 1:
            p1 = 1.0 / (1.0 + np.exp(-blended[0]))
            probs = np.stack([1.0 - p1, p1]).astype(np.float32)
        else:
            probs = softmax_channels(blended)
        if self.probabilities == "uint8":
            out = np.rint(probs * 254.0).astype(np.uint8)
            if invalid is not None:
                out[:, invalid] = 255
        else:
            out = probs.astype(np.float16).astype(np.float32)
            if invalid is not None:
                out[:, invalid] = np.nan
        return [classes, out]

    def probabilities_file(self, request: OutputRequest) -> Path | None:
        """Where the probabilities go, if they were asked for."""
        if self.probabilities is None:
            return None
        return request.probabilities_output or probabilities_path(request.output)

    def finish(self, files: PartialFiles, request: OutputRequest) -> Products:
        super().finish(files, request)
        write_categories(request.output, self.class_names(), self.palette)
        probabilities = self.probabilities_file(request)
        if probabilities is not None:
            to_cog(files.probabilities, probabilities, resampling="average", compress=request.compress)
        return Products(probabilities=probabilities)

    def final_paths(self, request: OutputRequest) -> list[Path]:
        paths = super().final_paths(request)
        probabilities = self.probabilities_file(request)
        return paths[:1] + ([probabilities] if probabilities is not None else []) + paths[1:]

    def derive(self, request: OutputRequest, products: Products) -> Products:
        if request.vector is None:
            return products
        from rsvit.inference.vector import polygonize_raster

        features = polygonize_raster(
            request.output,
            request.vector,
            classes=self.class_names(),
            crs=request.vector_crs,
            simplify=request.vector_simplify,
        )
        return Products(probabilities=products.probabilities, vector=request.vector, features=features)
