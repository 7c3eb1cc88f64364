"""Class maps (segmentation, change): class indices, optional probabilities, optional polygons.

Channels are the model's classes (one channel: a binary logit, two classes). The class names come from the
model file's metadata, the colours from ``extra["palette"]`` or a fixed palette. Probabilities go to
``<output>_probabilities.tif`` unless another name is given; polygons per class are traced from the final
class map (:func:`~rsvit.inference.vector.polygonize_raster`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rsvit.inference.outputs.base import ModelFacts, OutputRequest, Products
from rsvit.inference.outputs.dense import DenseOutput, probe_channels
from rsvit.inference.outputs.registry import register_output
from rsvit.inference.writer import (
    OutputLayout,
    PartialFiles,
    check_palette,
    default_palette,
    probabilities_path,
    to_cog,
)

__all__ = ["ClassMapOutput"]


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
    """One class index per pixel (``uint8``, ``uint16`` beyond 255 classes), nodata where the input was."""

    tasks: ClassVar[dict[str, int]] = {"segmentation": 1, "change": 2}

    @classmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> ClassMapOutput:
        channels = _class_channels(facts)
        n_classes = 2 if channels == 1 else channels
        classes = getattr(facts.meta, "classes", None)
        if classes is not None and len(classes) != n_classes:
            raise ValueError(f"the metadata names {len(classes)} classes but the model predicts {n_classes}")
        extra = dict(getattr(facts.meta, "extra", None) or {})
        palette = check_palette(extra["palette"], n_classes) if "palette" in extra else None
        palette = palette or default_palette(n_classes)
        layout = OutputLayout(
            kind="classes",
            channels=channels,
            classes=tuple(classes) if classes else None,
            palette=tuple(palette) if palette else None,
            probabilities=request.probabilities,
        )
        return cls(layout)

    def probabilities_file(self, request: OutputRequest) -> Path | None:
        """Where the probabilities go, if they were asked for."""
        if self.layout.probabilities is None:
            return None
        return request.probabilities_output or probabilities_path(request.output)

    def finish(self, files: PartialFiles, request: OutputRequest) -> Products:
        super().finish(files, request)
        probabilities = self.probabilities_file(request)
        if probabilities is not None:
            to_cog(files.probabilities, probabilities, resampling="average", compress=request.compress)
        return Products(probabilities=probabilities)

    def derive(self, request: OutputRequest, products: Products) -> Products:
        if request.vector is None:
            return products
        from rsvit.inference.vector import polygonize_raster

        features = polygonize_raster(
            request.output,
            request.vector,
            classes=self.layout.class_names(),
            crs=request.vector_crs,
            simplify=request.vector_simplify,
        )
        return Products(probabilities=products.probabilities, vector=request.vector, features=features)
