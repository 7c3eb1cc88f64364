"""What dense kinds share: one map per window, blended where windows overlap, written as GeoTIFFs.

Every window's output is a ``(C, h, w)`` float32 array at window resolution. Overlapping windows are
blended with smooth weights (:class:`~rsvit.inference.blend.BlendAccumulator`) and finished cells go to
partial GeoTIFFs (:class:`~rsvit.inference.writer.MapSink`), which become Cloud-Optimized GeoTIFFs at the
end. The kinds differ in the files they describe (:meth:`DenseOutput.partial_maps`) and in what they write
for a blended cell (:meth:`DenseOutput.encode`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rsvit.inference.blend import BlendAccumulator
from rsvit.inference.outputs.base import ModelFacts, OutputRequest, Products, RasterOutput
from rsvit.inference.plan import WindowPlan
from rsvit.inference.writer import MapSink, PartialFiles, PartialMap, copy_rows, to_cog

__all__ = ["BlendedMapSink", "DenseOutput", "probe_channels"]


def probe_channels(facts: ModelFacts) -> int:
    """Output channels of a module without a description: one forward pass on blank windows tells."""
    plan = facts.plan
    x = torch.zeros(1, facts.bands, plan.window_height, plan.window_width)
    param = next(iter(facts.model.parameters()), None)
    if param is not None:
        x = x.to(param.device)
    with torch.inference_mode():
        out = facts.model(*([x] * facts.dates))
    return 1 if out.dim() == 3 else int(out.shape[1])


class BlendedMapSink:
    """Blends the window outputs of a share of strips and writes finished cells to the partial maps."""

    def __init__(
        self,
        output: DenseOutput,
        files: PartialFiles,
        grid: dict[str, Any],
        plan: WindowPlan,
        strips: range,
        create: bool,
    ) -> None:
        rows = (plan.strip_rows(strips.start)[0], plan.strip_rows(strips.stop - 1)[1])
        self.maps = MapSink(output.partial_maps(files), grid, output.encode, create=create)
        self.accumulator = BlendAccumulator(plan, output.channels, self.maps.write, rows=rows)

    def add(self, index: int, result: np.ndarray | None, valid: np.ndarray | None) -> None:
        self.accumulator.add(index, result, valid)

    def flush(self) -> None:
        self.maps.flush()

    def close(self) -> None:
        self.maps.close()


@dataclass(frozen=True)
class DenseOutput(RasterOutput):
    """A dense map of ``channels`` per window, blended and written as GeoTIFFs."""

    channels: int

    #: overview resampling of the final main map
    resampling: ClassVar[str] = "nearest"

    def fingerprint(self) -> dict[str, Any]:
        return {"channels": self.channels, "probabilities": None}

    @abstractmethod
    def partial_maps(self, files: PartialFiles) -> list[PartialMap]:
        """The partial GeoTIFFs this kind writes, main map first."""

    @abstractmethod
    def encode(self, blended: np.ndarray, invalid: np.ndarray | None) -> Sequence[np.ndarray]:
        """One array per partial map for a blended ``(C, h, w)`` cell (``invalid``: nodata pixels)."""

    def as_channels_first(self, out: torch.Tensor) -> torch.Tensor:
        """The model's batch output as ``(N, C, h, w)`` (a hook for kinds that accept other shapes)."""
        return out

    def split_batch(self, out: Any, inputs: tuple[int, ...]) -> Sequence[np.ndarray]:
        array = self.as_channels_first(out).float().cpu().numpy()
        expected = (inputs[0], self.channels, *inputs[-2:])
        if tuple(array.shape) != expected:
            raise ValueError(
                f"the model returned shape {tuple(array.shape)} for windows {tuple(inputs)}; expected "
                f"{expected} (dense outputs at window resolution)"
            )
        return list(array)

    def open_share(
        self, files: PartialFiles, grid: dict[str, Any], plan: WindowPlan, strips: range, create: bool
    ) -> BlendedMapSink:
        return BlendedMapSink(self, files, grid, plan, strips, create)

    def partial_paths(self, files: PartialFiles, grid: dict[str, Any]) -> list[Path]:
        return [partial.path for partial in self.partial_maps(files)]

    def merge_share(
        self, source: PartialFiles, target: PartialFiles, grid: dict[str, Any], rows: tuple[int, int]
    ) -> None:
        targets = self.partial_paths(target, grid)
        for src, dst in zip(self.partial_paths(source, grid), targets, strict=True):
            copy_rows(src, dst, *rows)

    def finish(self, files: PartialFiles, request: OutputRequest) -> Products:
        to_cog(files.main, request.output, resampling=self.resampling, compress=request.compress)
        return Products()
