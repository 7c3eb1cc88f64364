"""What a raster prediction produced and how long it took."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PredictionReport", "RasterWarning"]

#: below this size a rate per megapixel says more about start-up costs than about speed
_MIN_MEGAPIXELS_FOR_RATE = 0.1


class RasterWarning(UserWarning):
    """A run that succeeds but whose result is probably not what was meant (no CRS, all nodata...)."""


@dataclass
class PredictionReport:
    """What a run produced and how long it took (``model_seconds``: pure forward time)."""

    output: Path
    probabilities: Path | None
    vector: Path | None
    width: int
    height: int
    windows: int
    skipped_windows: int
    strips: int
    resumed_from: int
    seconds: float
    model_seconds: float
    features: int | None = None
    window: int = 0
    overlap: int = 0

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / max(self.megapixels, 1e-9)

    @property
    def overhead(self) -> float:
        """Total time over pure model time (1.0 would mean reading, blending and writing cost nothing)."""
        return self.seconds / self.model_seconds if self.model_seconds > 0 else float("inf")

    def summary(self) -> str:
        lines = [
            f"map: {self.output} ({self.width} x {self.height} px)",
            f"windows: {self.windows} run, {self.skipped_windows} skipped (all nodata), strips {self.strips}"
            + (f", {self.window} px with {self.overlap} px overlap" if self.window else "")
            + (f", resumed after strip {self.resumed_from}" if self.resumed_from else ""),
            f"time: {self.seconds:.1f} s"
            + (
                f" ({self.seconds_per_megapixel:.3f} s/MP)"
                if self.megapixels >= _MIN_MEGAPIXELS_FOR_RATE
                else f" (a {self.megapixels * 1e6:.0f}-pixel input: too small for a rate per megapixel)"
            )
            + f", model {self.model_seconds:.1f} s",
        ]
        if self.probabilities is not None:
            lines.append(f"probabilities: {self.probabilities}")
        if self.vector is not None:
            lines.append(f"vector: {self.vector} ({self.features} polygons)")
        return "\n".join(lines)
