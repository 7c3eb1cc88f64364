"""Height regression data: image + height raster pairs on one grid, and their dataset.

Names load on first use, so importing the package stays cheap.
"""

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "GridMismatchError": "rsvit.data.regression.datasets",
    "HeightImage": "rsvit.data.regression.datasets",
    "HeightPair": "rsvit.data.regression.datasets",
    "HeightPairDataset": "rsvit.data.regression.datasets",
    "grid_differences": "rsvit.data.regression.datasets",
    "projected_pixel_size": "rsvit.data.regression.datasets",
    "read_height_image": "rsvit.data.regression.datasets",
    "read_height_pair": "rsvit.data.regression.datasets",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
