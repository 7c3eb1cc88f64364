"""Prompted segmentation of whole GeoTIFFs: each prompt is answered from a window around it.

Windows. A prompt is answered from a square window of ``window`` pixels (default: the model's input size,
so SAM sees the raster at its native resolution; a larger window is resized to the model input, i.e. a
coarser resolution). Window origins snap to a grid of half a window, so nearby prompts share a window and
its embedding; a prompt wider than the window gets a window of its own, 25% larger than its extent. The
embeddings of the last ``cache_size`` windows are kept (least recently used dropped). Prompts of one
window with the same structure (number of points, box or not) are decoded in one batch.

Stitching. The mask raster lies on the input's grid (CRS, transform, size). In ``"ids"`` mode each pixel
holds the 1-based number of its prompt (prompts in file order; where masks overlap the lower number
wins, and the polygons follow the raster), in ``"binary"`` mode 1 for any mask. 0 is background; pixels
the input marks invalid are nodata (the dtype's maximum). Polygons carry ``prompt_id`` (the file's),
``value`` (the raster value) and ``score`` (the predicted IoU of the chosen mask).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvit.inference.reader import InputError, SceneReader
from rsvit.inference.vector import LONLAT_DECIMALS, VECTOR_CRS, _rounded
from rsvit.inference.writer import to_cog, write_categories
from rsvit.models.promptable.predictor import SamPredictor
from rsvit.models.promptable.sam import Sam
from rsvit.structures.prompts import Prompt, read_prompts

__all__ = [
    "RasterPromptResult",
    "RasterSamPredictor",
    "load_promptable_model",
    "open_promptable_model",
    "segment_raster",
]

Window = tuple[int, int, int, int]  # x0, y0, width, height (pixels)


def load_promptable_model(model: str | os.PathLike[str] | Sam, runtime: str = "torch") -> Sam:
    """A :class:`Sam` from an rsvit model file (``save_model``), an official SAM checkpoint or an export.

    The two graphs of ``rsvit export`` stand in for the model (CPU only, see
    :mod:`rsvit.export.sam_runtime`): with ``runtime="onnxruntime"``, ``model`` names the ``.onnx`` pair
    (``OUT.encoder.onnx``, ``OUT.decoder.onnx``, ``OUT.onnx`` or ``OUT``); with ``runtime="torch"``, a
    ``.pt2`` path or an ``OUT`` whose ``OUT.encoder.pt2`` exists names the ``.pt2`` pair.
    """
    from rsvit.export.sam_runtime import pair_format, sam_pair

    if runtime == "onnxruntime":
        return _exported_sam(model, "onnx")
    if isinstance(model, Sam):
        return model.eval()
    path = Path(model)
    if pair_format(path) == "onnx":
        raise ValueError(
            f"{path} is an ONNX file: run it with the onnxruntime runtime (--runtime onnxruntime)"
        )
    if pair_format(path) == "exported-program":
        return _exported_sam(path, "exported-program")
    if not path.exists():
        if sam_pair(path, "exported-program")["sam-image-encoder"].is_file():
            return _exported_sam(path, "exported-program")
        onnx_encoder = sam_pair(path, "onnx")["sam-image-encoder"]
        hint = f" ({onnx_encoder.name} exists: add --runtime onnxruntime)" if onnx_encoder.is_file() else ""
        raise FileNotFoundError(f"model file not found: {path}{hint}")
    from rsvit.models.promptable.checkpoint import load_official_sam
    from rsvit.models.spec import load_model

    try:
        loaded, spec, _ = load_model(path)
    except Exception as rsvit_err:
        try:
            return load_official_sam(path).eval()
        except Exception as official_err:
            raise ValueError(
                f"{path} is neither an rsvit model file ({rsvit_err}) nor an official SAM checkpoint "
                f"({official_err}); pass a promptable model saved with rsvit.models.save_model or a "
                "segment-anything .pth file"
            ) from None
    if spec.task != "promptable" or not isinstance(loaded, Sam):
        raise ValueError(
            f"{path} holds a {spec.task!r} model ({spec.backbone}); prompted segmentation needs a promptable "
            "model (task 'promptable', e.g. SAM)"
        )
    return loaded.eval()


def open_promptable_model(
    model: str | os.PathLike[str] | Sam,
    runtime: str | None,
    encoder_dtype: torch.dtype | None,
    device: str | torch.device | None,
) -> Sam:
    """The model of a raster command on its device; ``runtime`` defaults to ONNX Runtime for ``.onnx``."""
    from rsvit.export.sam_runtime import ExportedSam
    from rsvit.inference.model import choose_runtime

    runtime = choose_runtime(model, runtime)
    if runtime == "onnxruntime":
        _refuse_dtype(encoder_dtype)
    sam = load_promptable_model(model, runtime)
    if isinstance(sam, ExportedSam):
        _refuse_dtype(encoder_dtype)
    return sam if device is None else sam.to(device)


def _refuse_dtype(encoder_dtype: torch.dtype | None) -> None:
    if encoder_dtype not in (None, torch.float32):
        raise ValueError(
            f"--encoder-dtype {str(encoder_dtype).removeprefix('torch.')} applies to PyTorch models; the "
            "exported graphs run in float32 (leave it out, or run the PyTorch model)"
        )


def _exported_sam(model: Any, format: str) -> Any:
    if isinstance(model, torch.nn.Module):
        raise ValueError(
            "runtime onnxruntime runs the graphs of `rsvit export`: pass OUT.encoder.onnx (or the pair's "
            "OUT), not a module"
        )
    from rsvit.export.sam_runtime import load_exported_sam, pair_format

    if format == "onnx" and pair_format(model) == "exported-program":
        raise ValueError(
            f"{model} is a torch.export archive: it runs in PyTorch (--runtime torch, the default for .pt2)"
        )
    # as many ONNX Runtime threads as PyTorch uses, so OMP_NUM_THREADS and torch.set_num_threads hold
    return load_exported_sam(model, format, threads=torch.get_num_threads())


def check_outputs(outputs: Sequence[Path | None], input_path: Path, overwrite: bool) -> None:
    """Refuses to overwrite the input, and existing outputs unless asked to."""
    for out in outputs:
        if out is None:
            continue
        if out.resolve() == input_path.resolve():
            raise ValueError(f"the output {out} would overwrite the input; choose another name")
        if out.exists() and not overwrite:
            raise ValueError(
                f"{out} already exists; pass overwrite=True (--overwrite) or choose another name"
            )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` floats in 0-1 (the reader's scaling) -> the ``(h, w, C)`` uint8 image SAM takes."""
    return np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))


class MaskCanvas:
    """A single-band GeoTIFF on the input's grid, filled window by window, copied to a COG at the end.

    Created beside the output under a hidden name, initialised strip by strip to 0 (or nodata where the
    input is invalid), so memory stays bounded by the largest window.
    """

    def __init__(self, reader: SceneReader, output: Path, dtype: str, strip_rows: int = 256) -> None:
        import rasterio

        self.output = output
        self.dtype = dtype
        self.nodata = int(np.iinfo(dtype).max)
        self.path = output.with_name(f".{output.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial.tif")
        output.parent.mkdir(parents=True, exist_ok=True)
        profile = {
            "driver": "GTiff",
            "width": reader.width,
            "height": reader.height,
            "count": 1,
            "dtype": dtype,
            "nodata": self.nodata,
            "crs": reader.crs,
            "transform": reader.transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "zstd",
            "bigtiff": "if_safer",
        }
        self._dataset = rasterio.open(self.path, "w+", **profile)
        for r0 in range(0, reader.height, strip_rows):
            rows = min(strip_rows, reader.height - r0)
            _, valid = reader.read(r0, 0, rows, reader.width)
            block = np.zeros((rows, reader.width), dtype)
            if valid is not None:
                block[~valid] = self.nodata
            self.write(block, (0, r0, reader.width, rows))

    def read(self, window: Window) -> np.ndarray:
        from rasterio.windows import Window as RioWindow

        return self._dataset.read(1, window=RioWindow(*window))

    def write(self, block: np.ndarray, window: Window) -> None:
        from rasterio.windows import Window as RioWindow

        self._dataset.write(block, 1, window=RioWindow(*window))

    def commit(self, categories: Sequence[str] | None = None) -> None:
        """Closes the canvas and copies it to the final COG (atomically), plus the category sidecar."""
        self._dataset.close()
        try:
            to_cog(self.path, self.output, resampling="nearest")
        finally:
            self.discard()
        if categories is not None:
            write_categories(self.output, categories)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._dataset.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PolygonCollector:
    """GeoJSON features, one per mask given in pixels of a window: EPSG:4326, the raster's CRS or pixels."""

    def __init__(self, reader: SceneReader, crs: str = "EPSG:4326", simplify: float = 1.0) -> None:
        if crs not in VECTOR_CRS:
            raise ValueError(f"vector CRS must be one of {', '.join(VECTOR_CRS)}, got {crs!r}")
        if reader.crs is None and crs != "pixel":
            raise ValueError(f"{reader.path} has no CRS; ask for pixel coordinates (--vector-crs pixel)")
        self.reader, self.crs, self.simplify = reader, crs, simplify
        self.features: list[dict] = []

    def add(self, mask: np.ndarray, window: Window, properties: dict[str, Any]) -> bool:
        """Adds one (Multi)Polygon feature of ``mask`` (pixels of ``window``); False when it is empty."""
        from rasterio.features import shapes
        from rasterio.transform import Affine
        from rasterio.warp import transform_geom
        from shapely import unary_union
        from shapely.affinity import affine_transform
        from shapely.geometry import mapping, shape

        data = mask.astype(np.uint8)
        parts = [shape(geom) for geom, _ in shapes(data, mask=data > 0, connectivity=4)]
        if not parts:
            return False
        x0, y0 = window[0], window[1]
        base = self.reader.transform if self.crs != "pixel" else Affine.identity()
        t = base @ Affine.translation(x0, y0)
        geom = unary_union(parts)
        if self.simplify > 0:
            geom = geom.simplify(self.simplify, preserve_topology=True)
        geometry = mapping(affine_transform(geom, [t.a, t.b, t.d, t.e, t.c, t.f]))
        if self.crs == "EPSG:4326":
            geometry = dict(transform_geom(self.reader.crs, "EPSG:4326", geometry))
            geometry["coordinates"] = _rounded(geometry["coordinates"], LONLAT_DECIMALS)
        self.features.append({"type": "Feature", "properties": dict(properties), "geometry": geometry})
        return True

    def write(self, path: Path) -> None:
        """Writes the collection under a temporary name and renames it onto ``path``."""
        os.replace(self.stage(path), path)

    def stage(self, path: Path) -> Path:
        """Writes the collection to a hidden temporary file beside ``path``; returns that file."""
        header: dict[str, Any] = {"type": "FeatureCollection", "features": self.features}
        if self.crs == "raster":
            header["crs"] = {"type": "name", "properties": {"name": self.reader.crs.to_string()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(header))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return tmp


def commit_outputs(
    canvas: MaskCanvas,
    categories: Sequence[str] | None,
    polygons: PolygonCollector | None,
    vector: Path | None,
) -> None:
    """Publishes the mask COG and the polygons together.

    The polygons are staged first, so a failure before the end leaves neither final file new.
    """
    staged = polygons.stage(vector) if polygons is not None and vector is not None else None
    try:
        canvas.commit(categories)
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    if staged is not None:
        os.replace(staged, vector)


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "window") -> Any:
    """A tqdm bar (or a silent stand-in when disabled)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


def prompt_extent(prompt: Prompt) -> tuple[float, float, float, float]:
    """Pixel bounds ``(x0, y0, x1, y1)`` of everything in a prompt (centre convention)."""
    xs: list[float] = []
    ys: list[float] = []
    if prompt.points is not None:
        xs += list(prompt.points[:, 0])
        ys += list(prompt.points[:, 1])
    if prompt.box is not None:
        xs += [prompt.box[0], prompt.box[2]]
        ys += [prompt.box[1], prompt.box[3]]
    if prompt.mask is not None:
        rows, cols = np.nonzero(prompt.mask)
        xs += [cols.min(), cols.max()]
        ys += [rows.min(), rows.max()]
    if not xs:
        raise ValueError(f"prompt {prompt.prompt_id!r} is empty: it has no points, box or mask")
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def window_for(extent: tuple[float, float, float, float], size: int, width: int, height: int) -> Window:
    """The window answering a prompt: grid-snapped (half-window steps) when the prompt fits in it."""
    x0, y0, x1, y1 = extent
    need = max(x1 - x0, y1 - y0) + 1
    if need > size * 0.75:  # too big for a shared window: one of its own, with a margin
        size = int(np.ceil(need * 1.25))
    w, h = min(size, width), min(size, height)
    stride = max(size // 2, 1)

    def origin(lo: float, hi: float, extent_size: int, limit: int) -> int:
        centre = (lo + hi) / 2
        snapped = round((centre - extent_size / 2) / stride) * stride
        start = min(max(snapped, 0), limit - extent_size)
        if lo < start or hi > start + extent_size - 1:  # snapping cut the prompt: centre it instead
            start = min(max(round(centre - extent_size / 2), 0), limit - extent_size)
        return start

    return origin(x0, x1, w, width), origin(y0, y1, h, height), w, h


def shift_prompt(prompt: Prompt, window: Window) -> Prompt:
    """The prompt in the pixels of ``window``."""
    offset = np.array([window[0], window[1]], dtype=np.float64)
    x0, y0, w, h = window
    return Prompt(
        points=None if prompt.points is None else prompt.points - offset,
        labels=prompt.labels,
        box=None if prompt.box is None else prompt.box - np.tile(offset, 2),
        mask=None if prompt.mask is None else prompt.mask[y0 : y0 + h, x0 : x0 + w],
        prompt_id=prompt.prompt_id,
        sources=list(prompt.sources),
    )


@dataclass
class RasterPromptResult:
    """One answered prompt: its best mask on ``window`` (pixels), the predicted IoU and the window."""

    mask: np.ndarray
    score: float
    window: Window


class RasterSamPredictor:
    """Answers prompts on a raster of any size from windows around them; window embeddings are cached.

    Args:
        model: a :class:`Sam`.
        reader: the raster, its bands selected (as many as the model takes), scaled to 0-1.
        window: window side in pixels (default the model's input size: native resolution).
        cache_size: embeddings kept (least recently used dropped).
        encoder_dtype: autocast dtype of the image encoder (see :class:`SamPredictor`).
    """

    def __init__(
        self,
        model: Sam,
        reader: SceneReader,
        window: int | None = None,
        cache_size: int = 4,
        encoder_dtype: torch.dtype | None = None,
    ) -> None:
        self.predictor = SamPredictor(model, encoder_dtype=encoder_dtype)
        if len(reader.bands) != self.predictor.model_bands:
            raise InputError(
                f"{reader.path}: {len(reader.bands)} band(s) selected but the model takes "
                f"{self.predictor.model_bands}; choose them with --bands"
            )
        self.reader = reader
        self.window = int(window or model.img_size)
        if self.window < 16:
            raise ValueError(f"window must be at least 16 pixels, got {self.window}")
        self.cache_size = max(int(cache_size), 1)
        self._cache: OrderedDict[Window, tuple[Any, Any, Any, np.ndarray | None]] = OrderedDict()
        self.embeddings_computed = 0

    def window_of(self, prompt: Prompt) -> Window:
        return window_for(prompt_extent(prompt), self.window, self.reader.width, self.reader.height)

    def _activate(self, window: Window) -> np.ndarray | None:
        """Makes ``window`` the predictor's image (from the cache when possible); returns its validity."""
        p = self.predictor
        if window in self._cache:
            self._cache.move_to_end(window)
            p.features, p.original_size, p.input_size, valid = self._cache[window]
            return valid
        x0, y0, w, h = window
        image, valid = self.reader.read(y0, x0, h, w)
        p.set_image(to_uint8(image))
        self.embeddings_computed += 1
        self._cache[window] = (p.features, p.original_size, p.input_size, valid)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return valid

    def predict(self, prompts: Sequence[Prompt], window: Window | None = None) -> list[RasterPromptResult]:
        """Best masks for prompts sharing one window (default the window of the first prompt)."""
        window = window or self.window_of(prompts[0])
        valid = self._activate(window)
        local = [shift_prompt(p, window) for p in prompts]
        results: list[RasterPromptResult | None] = [None] * len(prompts)
        for indices in _batches(local):
            masks, scores = self._decode([local[i] for i in indices])
            for i, mask, score in zip(indices, masks, scores, strict=True):
                if valid is not None:
                    mask = mask & valid
                results[i] = RasterPromptResult(mask, score, window)
        return [r for r in results if r is not None]

    def _decode(self, prompts: list[Prompt]) -> tuple[list[np.ndarray], list[float]]:
        p = self.predictor
        if len(prompts) == 1 or prompts[0].mask is not None:
            out = []
            for prompt in prompts:
                masks, iou, _ = p.predict_prompt(prompt)
                best = int(np.argmax(iou))
                out.append((masks[best], float(iou[best])))
            return [m for m, _ in out], [s for _, s in out]
        first = prompts[0]
        multimask = first.box is None and first.points is not None and len(first.points) == 1
        coords = labels = boxes = None
        size = p.original_size
        if first.points is not None:
            pts = np.stack([q.points for q in prompts])
            coords = torch.as_tensor(
                p.transform.apply_coords(pts, size), dtype=torch.float32, device=p.device
            )
            labels = torch.as_tensor(
                np.stack([q.labels for q in prompts]), dtype=torch.int64, device=p.device
            )
        if first.box is not None:
            bx = np.stack([q.box for q in prompts])
            boxes = torch.as_tensor(p.transform.apply_boxes(bx, size), dtype=torch.float32, device=p.device)
        masks, iou, _ = p.predict_torch(coords, labels, boxes, multimask_output=multimask)
        best = iou.argmax(dim=1)
        rows = torch.arange(len(prompts), device=iou.device)
        return list(masks[rows, best].cpu().numpy()), iou[rows, best].tolist()


def _batches(prompts: Sequence[Prompt]) -> Iterator[list[int]]:
    """Indices of prompts that can be decoded together: same number of points, box or not, no mask."""
    groups: dict[tuple, list[int]] = {}
    for i, q in enumerate(prompts):
        if q.mask is not None:
            yield [i]
            continue
        key = (0 if q.points is None else len(q.points), q.box is not None)
        groups.setdefault(key, []).append(i)
    yield from groups.values()


def _properties(prompt: Prompt, value: int, score: float) -> dict[str, Any]:
    return {"prompt_id": prompt.prompt_id, "value": value, "score": round(score, 4)}


def segment_raster(
    model: str | os.PathLike[str] | Sam,
    input: str | os.PathLike[str],
    prompts: str | os.PathLike[str] | dict,
    output: str | os.PathLike[str],
    *,
    vector: str | os.PathLike[str] | None = None,
    bands: Sequence[int] | None = None,
    window: int | None = None,
    scale: float | None = None,
    mode: str = "ids",
    prompt_crs: Any = None,
    polygon_as: str = "box",
    cache_size: int = 4,
    encoder_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    runtime: str | None = None,
    vector_crs: str = "EPSG:4326",
    simplify: float = 1.0,
    overwrite: bool = False,
    progress: bool = True,
    on_window: Callable[[Window, list[RasterPromptResult]], None] | None = None,
) -> dict[str, Any]:
    """Answers every prompt of a GeoJSON file on a raster; writes a mask COG and optionally polygons.

    Args:
        model: a :class:`Sam`, an rsvit model file or an official SAM checkpoint.
        input: the raster.
        prompts: GeoJSON path/string/dict (see :func:`read_prompts`).
        output: the mask GeoTIFF (COG).
        vector: optional GeoJSON of the masks' polygons.
        bands: 1-based bands to feed (as many as the model takes).
        window: window side in pixels (default the model's input size).
        scale: divisor to 0-1 (default the dtype's maximum; e.g. ``3000`` for 16-bit reflectance-like
            data).
        mode: ``"ids"`` (pixel value: prompt number + 1; the lower number wins overlaps) or ``"binary"``.
        prompt_crs: CRS of the prompt coordinates (see :func:`read_prompts`).
        polygon_as: ``"box"`` or ``"mask"``: how polygon prompts reach SAM (see :func:`read_prompts`).
        cache_size: window embeddings kept (least recently used dropped).
        encoder_dtype: autocast dtype of the image encoder (see :class:`SamPredictor`).
        device: where the model runs (default: where it was loaded).
        runtime: ``"torch"`` or ``"onnxruntime"`` (the two graphs of ``rsvit export``, named as in
            :func:`load_promptable_model`; CPU). Default: ``onnxruntime`` for ``.onnx`` paths.
        vector_crs: coordinates of the polygons: ``"EPSG:4326"``, ``"raster"`` (its CRS) or ``"pixel"``.
        simplify: polygon simplification tolerance in pixels (0 disables).
        overwrite: replace existing outputs.
        progress: show a progress bar over the windows.
        on_window: called with each window and its results (inspection, tests).

    Returns:
        A summary: prompts, windows, embeddings computed, output paths.
    """
    if mode not in ("ids", "binary"):
        raise ValueError(f"mode must be 'ids' or 'binary', got {mode!r}")
    input_path, output = Path(input), Path(output)
    vector_path = None if vector is None else Path(vector)
    check_outputs([output, vector_path], input_path, overwrite)
    sam = open_promptable_model(model, runtime, encoder_dtype, device)
    n_bands = int(sam.pixel_mean.shape[0])
    reader = SceneReader(input_path, bands=bands, expected_bands=n_bands, scale=scale)
    items = read_prompts(
        prompts,
        reader.transform,
        reader.crs,
        (reader.height, reader.width),
        crs=prompt_crs,
        polygon_as=polygon_as,
    )
    if not items:
        raise ValueError(f"no prompts in {prompts if not isinstance(prompts, dict) else 'the GeoJSON'}")
    for prompt in items:
        prompt_extent(prompt)  # empty prompts fail here, before any work
    dtype = "uint8" if mode == "binary" or len(items) < 255 else "uint16"
    if mode == "ids" and len(items) >= 65535:
        raise ValueError(f"{len(items)} prompts do not fit a uint16 id raster; split the prompt file")
    engine = RasterSamPredictor(
        sam, reader, window=window, cache_size=cache_size, encoder_dtype=encoder_dtype
    )
    by_window: dict[Window, list[int]] = {}
    for i, prompt in enumerate(items):
        by_window.setdefault(engine.window_of(prompt), []).append(i)
    polygons = PolygonCollector(reader, vector_crs, simplify) if vector_path is not None else None
    canvas = MaskCanvas(reader, output, dtype)
    answered: dict[int, tuple[Window, float]] = {}
    try:
        with progress_bar(len(by_window), "prompts", progress) as bar:
            for win in sorted(by_window, key=lambda w: (w[1], w[0])):
                indices = by_window[win]
                results = engine.predict([items[i] for i in indices], win)
                if on_window is not None:
                    on_window(win, results)
                current = canvas.read(win)
                for i, res in zip(indices, results, strict=True):
                    value = 1 if mode == "binary" else i + 1
                    free = current != canvas.nodata
                    if mode == "ids":  # the lower prompt number wins, whatever the window order
                        free &= (current == 0) | (current > value)
                    current[res.mask & free] = value
                    answered[i] = (win, res.score)
                    if polygons is not None and mode == "binary":
                        polygons.add(res.mask & free, win, _properties(items[i], value, res.score))
                canvas.write(current, win)
                bar.update(1)
        if polygons is not None and mode == "ids":  # after stitching: each prompt's final pixels
            for i, (win, score) in sorted(answered.items()):
                polygons.add(canvas.read(win) == i + 1, win, _properties(items[i], i + 1, score))
        if mode == "binary":
            categories: list[str] | None = ["background", "mask"]
        else:
            categories = ["background", *(str(p.prompt_id) for p in items)] if len(items) < 255 else None
        commit_outputs(canvas, categories, polygons, vector_path)
    except BaseException:
        canvas.discard()
        raise
    finally:
        reader.close()
    return {
        "prompts": len(items),
        "windows": len(by_window),
        "embeddings": engine.embeddings_computed,
        "output": str(output),
        "vector": None if vector_path is None else str(vector_path),
        "features": None if polygons is None else len(polygons.features),
    }
