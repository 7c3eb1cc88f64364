"""What an output kind implements so that the engine can map a task's windows to files.

The engine knows nothing of class maps or values: it plans windows, reads them, runs the model and hands
every window's result to the output kind registered for the model's task (:mod:`.registry`). A kind:

1. :meth:`RasterOutput.settle` -- checks the request against the model (channels, class names, palette,
   which extra products make sense) once, before anything runs, and returns the kind's settled instance.
   The instance crosses to spawned processes, so it must pickle (a frozen dataclass does).
2. :meth:`RasterOutput.split_batch` -- turns the model's output for a batch of windows into one result per
   window, on the CPU (a dense map, or a set of boxes, or masks...). It raises when the shape is wrong.
3. :meth:`RasterOutput.open_share` -- a :class:`WindowSink` that receives those results in run order
   for a contiguous range of strips and writes them to the partial files; ``flush`` comes after every
   finished strip (that is what ``resume`` relies on), ``close`` at the end.
4. :meth:`RasterOutput.partial_paths` / :meth:`RasterOutput.merge_share` -- the partial files, and how a
   helper process's rows are copied into the writer's files after a multi-process run.
5. :meth:`RasterOutput.finish` then :meth:`RasterOutput.derive` -- partial files to final files, then
   products made from the final files (e.g. polygons). Both write to the paths of the request they are
   given: the engine hands them temporary names and renames all of :meth:`RasterOutput.final_paths`
   together once everything is written (PAM sidecars ``<file>.aux.xml`` travel with their file).

A vector or instance kind (oriented boxes of a detector, masks of a promptable model) implements the same
methods: its sink collects the objects of each strip (dropping duplicates from overlaps) into a partial
file, and ``finish`` writes the GeoJSON; registering it for its task is the only other step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from rsvit.inference.plan import WindowPlan
from rsvit.inference.writer import PartialFiles

__all__ = ["ModelFacts", "OutputRequest", "Products", "RasterOutput", "WindowSink"]


@dataclass(frozen=True)
class OutputRequest:
    """What the caller asked to be written (the kinds use what applies to them and refuse the rest)."""

    output: Path
    probabilities: str | None = None
    probabilities_output: Path | None = None
    vector: Path | None = None
    vector_crs: str = "EPSG:4326"
    vector_simplify: float = 1.0
    compress: str = "deflate"


@dataclass(frozen=True)
class ModelFacts:
    """What is known about the model when its output is settled.

    ``spec`` and ``meta`` are the ``ModelSpec`` and ``WeightsMetadata`` of a model file (``None`` for a bare
    module without them); ``bands`` is the number of bands fed per date and ``dates`` the number of inputs.
    """

    model: Any
    spec: Any
    meta: Any
    task: str
    bands: int
    dates: int
    plan: WindowPlan


@dataclass(frozen=True)
class Products:
    """Files beside the main output that a run produced (for the report)."""

    probabilities: Path | None = None
    vector: Path | None = None
    features: int | None = None


class WindowSink(Protocol):
    """Receives window results of one share of strips, in run order, and writes them."""

    def add(self, index: int, result: Any, valid: np.ndarray | None) -> None:
        """One window's result (``None`` for a skipped, all-nodata window) and its validity mask."""

    def flush(self) -> None:
        """Puts everything received so far on disk (called after each finished strip)."""

    def close(self) -> None:
        """Releases open files (also called after a failure)."""


class RasterOutput(ABC):
    """An output kind: how the results of a task's windows become files (see the module docstring)."""

    #: task name -> number of input rasters (dates) that task's models take.
    tasks: ClassVar[Mapping[str, int]] = {}
    #: window and overlap when neither the call nor the model file sets them (``None``: 512, a quarter)
    default_window: ClassVar[int | None] = None
    default_overlap: ClassVar[int | None] = None

    @classmethod
    @abstractmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> RasterOutput:
        """The output for this model and request; raises ``ValueError`` naming what cannot be written."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Settings a resumed run must share with the interrupted one (JSON values)."""

    @abstractmethod
    def split_batch(self, out: Any, inputs: tuple[int, ...]) -> Sequence[Any]:
        """The model's output for a batch of windows of shape ``inputs`` (N, C, h, w): N CPU results."""

    @abstractmethod
    def open_share(
        self, files: PartialFiles, grid: dict[str, Any], plan: WindowPlan, strips: range, create: bool
    ) -> WindowSink:
        """A sink writing the given strips into ``files`` (created when ``create``, else continued)."""

    @abstractmethod
    def partial_paths(self, files: PartialFiles, grid: dict[str, Any]) -> list[Path]:
        """The partial files this output writes (all must exist to resume)."""

    @abstractmethod
    def merge_share(
        self, source: PartialFiles, target: PartialFiles, grid: dict[str, Any], rows: tuple[int, int]
    ) -> None:
        """Copies output rows ``[r0, r1)`` of another process's partial files into ``target``."""

    @abstractmethod
    def finish(self, files: PartialFiles, request: OutputRequest) -> Products:
        """Writes the final files from the partial ones, each atomically."""

    def derive(self, request: OutputRequest, products: Products) -> Products:
        """Products made from the final files (default: none)."""
        return products

    def final_paths(self, request: OutputRequest) -> list[Path]:
        """Every file ``finish`` and ``derive`` write for ``request``, main output first.

        The engine checks these before the run (nothing to overwrite) and writes them under temporary
        names that it renames together at the end, so a run's files appear together or not at all.
        """
        return [request.output] + ([request.vector] if request.vector is not None else [])
