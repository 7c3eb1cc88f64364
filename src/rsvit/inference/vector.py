"""Polygons per class from a class-index GeoTIFF, streamed to GeoJSON strip by strip.

The class raster is read back in strips of rows (never whole). ``rasterio.features.shapes`` traces the
regions of each strip in pixel coordinates; regions cut by a strip boundary are joined again with the
matching regions of the next strip (``shapely.unary_union``), so a field crossing strips is one polygon.
Geometries are simplified in pixel units (topology preserved; neighbouring polygons are simplified
independently, so shared edges may no longer coincide exactly), then mapped through the raster's transform
and, for ``crs="EPSG:4326"`` (the default), reprojected with ``rasterio.warp.transform_geom``. Nodata pixels
become no polygon. The file is written under a temporary name and renamed at the end.

EPSG:4326 output is plain RFC 7946 GeoJSON (longitude, latitude), rounded to 7 decimals (about 1 cm, as
RFC 7946 advises: more digits only add bytes). Raster-CRS output carries the (pre-RFC 7946) ``crs`` member
that GDAL and QGIS read. ``crs="pixel"`` writes column/row coordinates (y points down), the only choice for
a raster without a CRS, and only on request.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["VECTOR_CRS", "polygonize_raster"]

VECTOR_CRS = ("EPSG:4326", "raster", "pixel")

#: decimals of longitude/latitude in EPSG:4326 output (1e-7 degree is about 1 cm)
LONLAT_DECIMALS = 7


def _parts(geom: Any) -> list[Any]:
    if geom.is_empty:
        return []
    return list(geom.geoms) if hasattr(geom, "geoms") else [geom]


def _strip_polygons(src: Any, r0: int, r1: int, nodata: float | None) -> Iterator[tuple[int, Any]]:
    import numpy as np
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from rasterio.windows import Window
    from shapely.geometry import shape

    data = src.read(1, window=Window(0, r0, src.width, r1 - r0))
    mask = None if nodata is None else data != np.array(nodata, dtype=data.dtype)
    if mask is not None and not mask.any():
        return
    for geom, value in shapes(data, mask=mask, connectivity=4, transform=Affine.translation(0, r0)):
        yield int(value), shape(geom)


def _rounded(coords: Any, decimals: int) -> Any:
    if isinstance(coords, float | int):
        return round(float(coords), decimals)
    return [_rounded(c, decimals) for c in coords]


def _crs_member(crs: Any) -> dict[str, Any] | None:
    if crs is None:
        return None
    code = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{code}" if code else crs.to_string()
    return {"type": "name", "properties": {"name": name}}


def polygonize_raster(
    class_raster: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    crs: str = "EPSG:4326",
    simplify: float = 1.0,
    strip_rows: int = 512,
) -> int:
    """Writes one GeoJSON polygon feature per connected region of each class; returns the feature count.

    Args:
        class_raster: a class-index GeoTIFF (e.g. written by :func:`rsvit.inference.predict_raster`).
        output: the GeoJSON file (written atomically).
        classes: class names for the ``name`` property (default from the raster's ``CLASSES`` tag).
        crs: ``"EPSG:4326"`` (RFC 7946), ``"raster"`` (the raster's CRS) or ``"pixel"`` (column, row).
        simplify: Douglas-Peucker tolerance in pixels (0 keeps the exact pixel outlines).
        strip_rows: rows read at a time (memory ~ ``strip_rows * width`` bytes for 8-bit classes).
    """
    import rasterio
    from rasterio.transform import Affine
    from rasterio.warp import transform_geom
    from shapely import unary_union
    from shapely.affinity import affine_transform
    from shapely.geometry import mapping

    if crs not in VECTOR_CRS:
        raise ValueError(f"vector CRS must be one of {', '.join(VECTOR_CRS)}, got {crs!r}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    with rasterio.open(class_raster) as src:
        if src.crs is None and crs != "pixel":
            raise ValueError(
                f"{class_raster} has no CRS, so its polygons cannot be written in {crs}: georeference it, "
                "or ask for pixel coordinates (crs='pixel', --vector-crs pixel)"
            )
        if classes is None:
            with contextlib.suppress(KeyError, ValueError):
                classes = json.loads(src.tags()["CLASSES"])
        t = src.transform if crs != "pixel" else Affine.identity()
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        height = src.height
        header: dict[str, Any] = {"type": "FeatureCollection"}
        if crs == "raster" and (member := _crs_member(src.crs)) is not None:
            header["crs"] = member

        def feature(value: int, geom: Any) -> str:
            if simplify > 0:
                geom = geom.simplify(simplify, preserve_topology=True)
            geom = affine_transform(geom, matrix)
            geometry = mapping(geom)
            if crs == "EPSG:4326":
                geometry = dict(transform_geom(src.crs, crs, geometry))
                geometry["coordinates"] = _rounded(geometry["coordinates"], LONLAT_DECIMALS)
            name = classes[value] if classes is not None and 0 <= value < len(classes) else str(value)
            return json.dumps(
                {"type": "Feature", "properties": {"class": value, "name": name}, "geometry": geometry}
            )

        try:
            with open(tmp, "w") as out:
                head = json.dumps(header)
                out.write(head[:-1] + ', "features": [\n')
                pending: dict[int, list[Any]] = {}
                for r0 in range(0, height, strip_rows):
                    r1 = min(r0 + strip_rows, height)
                    fresh: dict[int, list[Any]] = {}
                    for value, geom in _strip_polygons(src, r0, r1, src.nodata):
                        fresh.setdefault(value, []).append(geom)
                    carried, pending = pending, {}
                    for value in sorted(set(fresh) | set(carried)):
                        new = fresh.get(value, [])
                        old = carried.get(value, [])
                        top = [g for g in new if g.bounds[1] <= r0]
                        rest = [g for g in new if g.bounds[1] > r0]
                        candidates = rest + (_parts(unary_union(old + top)) if old and top else old + top)
                        for geom in candidates:
                            if r1 < height and geom.bounds[3] >= r1:
                                pending.setdefault(value, []).append(geom)  # may continue below
                            else:
                                out.write((",\n" if count else "") + feature(value, geom))
                                count += 1
                out.write("\n]}\n")
            os.replace(tmp, output)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return count
