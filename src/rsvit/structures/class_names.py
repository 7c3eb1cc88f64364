"""The published class vocabularies of the oriented-box datasets, in their official index order.

Datasets, metrics, figures and detectors all index classes by these lists, so they live here, below every
package that uses them.
"""

from __future__ import annotations

__all__ = ["DOTA_CLASSES", "DOTA_V1_0_CLASSES", "DOTA_V1_5_CLASSES", "DOTA_V2_0_CLASSES", "HRSC2016_CLASSES"]

DOTA_V1_0_CLASSES: tuple[str, ...] = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
DOTA_V1_5_CLASSES: tuple[str, ...] = (*DOTA_V1_0_CLASSES, "container-crane")
DOTA_V2_0_CLASSES: tuple[str, ...] = (*DOTA_V1_5_CLASSES, "airport", "helipad")
DOTA_CLASSES: dict[str, tuple[str, ...]] = {
    "1.0": DOTA_V1_0_CLASSES,
    "1.5": DOTA_V1_5_CLASSES,
    "2.0": DOTA_V2_0_CLASSES,
}
# HRSC2016 is usually evaluated as a single "ship" class (its level-1 task).
HRSC2016_CLASSES: tuple[str, ...] = ("ship",)
