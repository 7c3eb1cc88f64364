"""Large-scene inference: any GeoTIFF in, georeferenced maps out, in bounded memory.

>>> from rsvit.inference import predict_raster
>>> report = predict_raster("runs/seg", "scene.tif", "map.tif", vector="map.geojson")  # doctest: +SKIP
>>> print(report.summary())  # doctest: +SKIP

The command line is ``rsvit predict-raster`` (see :mod:`rsvit.inference.cli`). Names are imported on first
use, so that building the ``rsvit`` parser does not load torch or GDAL.
"""

from __future__ import annotations

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "GridMismatchError": "rsvit.data.geo",
    "check_same_grid": "rsvit.inference.change",
    "grid_differences": "rsvit.inference.change",
    "PredictionReport": "rsvit.inference.report",
    "predict_raster": "rsvit.inference.engine",
    "resolve_model": "rsvit.inference.model",
    "Window": "rsvit.inference.plan",
    "WindowPlan": "rsvit.inference.plan",
    "InputError": "rsvit.inference.reader",
    "OutputWriteError": "rsvit.inference.engine",
    "RasterWarning": "rsvit.inference.report",
    "SceneReader": "rsvit.inference.reader",
    "RasterOutput": "rsvit.inference.outputs",
    "output_for_task": "rsvit.inference.outputs",
    "register_output": "rsvit.inference.outputs",
    "polygonize_raster": "rsvit.inference.vector",
    "default_palette": "rsvit.inference.writer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
