"""Large-scene inference: a GeoTIFF of any size in, georeferenced maps out, in bounded memory.

:func:`predict_raster` plans windows over the scene (:mod:`~rsvit.inference.plan`), reads them
(:mod:`~rsvit.inference.reader`), runs them through the model in batches, blends overlapping outputs with
smooth weights (:mod:`~rsvit.inference.blend`) and writes finished cells straight to partial GeoTIFFs, which
become Cloud-Optimized GeoTIFFs at the end (:mod:`~rsvit.inference.writer`). Memory depends on the window,
the batch and the raster width, not on the raster height.

>>> report = predict_raster("runs/seg", "scene.tif", "map.tif", vector="map.geojson")  # doctest: +SKIP
>>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsvit.inference.blend import BlendAccumulator
from rsvit.inference.change import check_same_grid
from rsvit.inference.plan import WindowPlan
from rsvit.inference.reader import InputError, SceneReader, parse_bands
from rsvit.inference.writer import (
    MapSink,
    OutputLayout,
    PartialFiles,
    check_palette,
    default_palette,
    probabilities_path,
    read_state,
    to_cog,
    write_state,
)

__all__ = ["DENSE_TASKS", "PredictionReport", "predict_raster", "resolve_model"]

DENSE_TASKS = ("segmentation", "change", "regression")
_GDAL_CACHE_BYTES = 16 * 2**20  # bounded block cache: GDAL's default (5% of RAM) would grow with the scene


# ----------------------------------------------------------------------------------------------
# Model and job description
# ----------------------------------------------------------------------------------------------


def resolve_model(model: nn.Module | str | os.PathLike[str]) -> tuple[nn.Module, Any, Any]:
    """``(module in eval mode, ModelSpec or None, WeightsMetadata or None)`` from a module or a path.

    A path is a ``.safetensors`` file written by :func:`rsvit.models.save_model` or a run folder holding
    ``model.safetensors``.
    """
    if isinstance(model, nn.Module):
        return model.eval(), None, None
    from rsvit.models import load_model

    path = Path(model)
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{path} is a folder without model.safetensors; pass a training run folder or the "
                ".safetensors file written by rsvit.models.save_model"
            )
        path = candidate
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path} is not a .safetensors model; export it with rsvit.models.save_model (or rsvit convert)"
        )
    return load_model(path)


def _first_conv_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            return module.in_channels if isinstance(module, nn.Conv2d) else None
    return None


def _model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


@functools.cache
def _libc_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


def release_free_heap() -> None:
    """Returns freed heap pages to the system (glibc).

    Window outputs and blend buffers of a few MB each are served from the heap once glibc's adaptive
    mmap threshold has grown; the holes they leave are otherwise kept, and peak RSS then creeps up with
    the number of windows (measured: +24 % from a 2000 to a 20000 px square scene). Trimming after each
    batch keeps it flat at a cost of milliseconds.
    """
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


@dataclass
class Job:
    """Everything a process needs to predict its share of windows (picklable for spawned processes)."""

    plan: WindowPlan
    readers: list[SceneReader]
    layout: OutputLayout
    grid: dict[str, Any]
    task: str
    batch_size: int
    bf16: bool
    num_workers: int
    fingerprint: dict[str, Any] = field(default_factory=dict)


class WindowBatches(Dataset):
    """Model-ready batches of windows of the given plan indices, read on demand.

    Each item is a whole batch: windows are read straight into their slot of one preallocated tensor
    per date, so no collate step copies them again.
    """

    def __init__(self, job: Job, indices: Sequence[int]) -> None:
        self.job = job
        self.indices = list(indices)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.job.batch_size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        bs = self.job.batch_size
        chosen = self.indices[i * bs : (i + 1) * bs]
        plan = self.job.plan
        images = [
            torch.empty(len(chosen), len(reader.bands), plan.window_height, plan.window_width)
            for reader in self.job.readers
        ]
        valids: list[np.ndarray | None] = []
        for slot, index in enumerate(chosen):
            win = plan.window(index)
            valid = None
            for reader, batch in zip(self.job.readers, images, strict=True):
                target = batch[slot, :, : win.height, : win.width].numpy()
                _, v = reader.read(win.y0, win.x0, win.height, win.width, out=target)
                if v is not None:
                    valid = v if valid is None else valid & v  # two dates: valid where both are
            valids.append(valid)
        return {
            "index": torch.tensor(chosen),
            "images": images,
            "valid": valids,
            "skip": torch.tensor([v is not None and not bool(v.any()) for v in valids], dtype=torch.bool),
        }


class WindowPredictor:
    """Runs the model on a batch of windows (skipping all-nodata ones) and times the pure forward passes."""

    def __init__(self, task: str, channels: int, bf16: bool) -> None:
        self.task = task
        self.channels = channels
        self.bf16 = bf16
        self.model_seconds = 0.0

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> list[np.ndarray | None]:
        """Per window of the batch: the ``(C, h, w)`` float32 output, or ``None`` for a skipped window."""
        skip = batch["skip"]
        keep = (~skip).nonzero().flatten()
        outputs: list[np.ndarray | None] = [None] * len(skip)
        if len(keep) == 0:
            return outputs
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        if len(keep) == len(skip):
            images = [x.to(device) for x in batch["images"]]
        else:
            images = [x[keep].to(device) for x in batch["images"]]
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = model(*images)
        if self.task == "regression" and out.dim() == 3:
            out = out.unsqueeze(1)
        out = out.float().cpu().numpy()
        self.model_seconds += time.perf_counter() - start
        expected = (len(keep), self.channels, *images[0].shape[-2:])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"the model returned shape {tuple(out.shape)} for windows {tuple(images[0].shape)}; expected "
                f"{expected} (dense outputs at window resolution)"
            )
        for k, i in enumerate(keep.tolist()):
            outputs[i] = out[k]
        return outputs


class ShareRunner:
    """Blends and writes the outputs of the windows of a contiguous share of strips.

    After each strip of the share it flushes the partial files and, if ``record_state``, records the
    progress for ``resume``.
    """

    def __init__(
        self, job: Job, strips: range, files: PartialFiles, create: bool, record_state: bool
    ) -> None:
        self.job = job
        self.strips = strips
        self.files = files
        self.record_state = record_state
        plan = job.plan
        rows = (plan.strip_rows(strips.start)[0], plan.strip_rows(strips.stop - 1)[1])
        self.sink = MapSink(files, job.grid, job.layout, create=create)
        self.accumulator = BlendAccumulator(plan, job.layout.channels, self.sink.write, rows=rows)
        self.strips_done = 0

    def consume(self, batch: dict[str, Any], outputs: list[np.ndarray | None]) -> None:
        plan = self.job.plan
        for index, output, valid in zip(batch["index"].tolist(), outputs, batch["valid"], strict=True):
            self.accumulator.add(index, output, valid)
            row, col = divmod(index, plan.n_cols)
            if col == plan.n_cols - 1 and row in self.strips:
                self.sink.flush()
                if self.record_state:
                    write_state(self.files.state, self.job.fingerprint, row + 1, plan.n_rows)
                self.strips_done += 1
        release_free_heap()

    def close(self) -> None:
        self.sink.close()


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # masks stay numpy arrays (the default conversion would turn them into tensors)


def loader_for(job: Job, indices: Sequence[int]) -> DataLoader:
    return DataLoader(
        WindowBatches(job, indices),
        batch_size=None,
        num_workers=job.num_workers,
        shuffle=False,
        collate_fn=_as_is,
    )


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


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
            f"time: {self.seconds:.1f} s ({self.seconds_per_megapixel:.3f} s/MP), "
            f"model {self.model_seconds:.1f} s",
        ]
        if self.probabilities is not None:
            lines.append(f"probabilities: {self.probabilities}")
        if self.vector is not None:
            lines.append(f"vector: {self.vector} ({self.features} polygons)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------


def _expected_bands(model: nn.Module, spec: Any, metadata: Any) -> int | None:
    if metadata is not None and metadata.input_size:
        return int(metadata.input_size[0])
    if metadata is not None and metadata.mean is not None:
        return len(metadata.mean)
    if spec is not None:
        return int(spec.in_chans)
    return _first_conv_channels(model)


def _default_window(extra: dict[str, Any]) -> int:
    """The window the model file recommends (``extra["window"]``, an int or a square ``[h, w]``), else 512."""
    window = extra.get("window")
    if isinstance(window, list | tuple) and len(window) == 2 and window[0] == window[1]:
        window = window[0]
    return int(window) if isinstance(window, int) and window > 0 else 512


def _infer_channels(model: nn.Module, spec: Any, meta: Any, task: str, bands: int, plan: WindowPlan) -> int:
    if task == "regression" and spec is not None:
        return 1
    if spec is not None:
        return int(spec.num_classes)
    num = getattr(model, "num_classes", None)
    if isinstance(num, int) and task != "regression":
        return num
    classes = getattr(meta, "classes", None)
    if classes and task != "regression":
        return len(classes)
    # A user module without a description: one forward pass on a blank window tells its output shape.
    x = torch.zeros(1, bands, plan.window_height, plan.window_width)
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = x.to(param.device)
    with torch.inference_mode():
        out = model(x, x) if task == "change" else model(x)
    return 1 if out.dim() == 3 else int(out.shape[1])


def _fingerprint(readers: list[SceneReader], **settings: Any) -> dict[str, Any]:
    inputs = []
    for reader in readers:
        stat = reader.path.stat()
        inputs.append(
            {"path": str(reader.path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
    return {"inputs": inputs, **settings}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {old.get(key)!r} then, {new.get(key)!r} now" for key in new if old.get(key) != new.get(key)
    ]


def predict_raster(
    model: nn.Module | str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    input_b: str | os.PathLike[str] | None = None,
    window: int | None = None,
    overlap: int | None = None,
    bands: str | Sequence[int] | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    probabilities: str | None = None,
    probabilities_output: str | os.PathLike[str] | None = None,
    vector: str | os.PathLike[str] | None = None,
    vector_crs: str = "raster",
    vector_simplify: float = 1.0,
    resume: bool = False,
    progress: bool = True,
    metadata: Any = None,
    task: str | None = None,
    scale: float | None = None,
    num_workers: int = 0,
    devices: int = 1,
    accelerator: str = "cpu",
    strategy: str = "ddp_spawn",
    compress: str = "deflate",
) -> PredictionReport:
    """Predicts a whole scene window by window and writes georeferenced maps.

    Args:
        model: a module, a ``.safetensors`` file from :func:`rsvit.models.save_model`, or a run folder
            holding ``model.safetensors`` (its metadata supplies classes, palette, mean/std and bands).
        input_path: the scene (any raster GDAL reads); ``input_b``: the second date for change models, on
            the same pixel grid.
        output_path: the class map (values for regression models), a Cloud-Optimized GeoTIFF on the
            input's grid (same CRS, transform and size), nodata where the input was nodata.
        window, overlap: window size and minimum overlap in pixels. Default window: the one the model
            file recommends (``extra["window"]``: the evaluation window of a sliding-window model, or the
            training crop of a change model, whose tokens pool over the whole input), otherwise 512.
            Default overlap: a quarter of the window.
        bands: 1-based bands to feed the model (``"1,2,3"`` or a sequence); default: all, minus alpha.
        batch_size, device, bf16: how the model runs (``bf16``: bfloat16 autocast).
        probabilities: ``"uint8"`` or ``"float16"`` to also write per-class probabilities to
            ``probabilities_output`` (default ``<output>_probabilities.tif``).
        vector, vector_crs, vector_simplify: GeoJSON of polygons per class, in ``"raster"`` CRS or
            ``"EPSG:4326"``, simplified with that tolerance in pixels.
        resume: continue an interrupted run of the same settings from the strips already written.
        progress: show a progress bar (windows/s and ETA).
        metadata: a ``WeightsMetadata`` for a bare module (overrides the file's for a path).
        task: ``segmentation``, ``change`` or ``regression``; default from the model file, else
            ``change`` with ``input_b`` and ``segmentation`` otherwise.
        scale: divisor turning raw values into model units (default: integer dtype maximum, 1 for floats,
            or the metadata's ``extra["input_scale"]``).
        num_workers: DataLoader processes reading windows ahead of the model.
        devices, accelerator, strategy: ``devices > 1`` shares the strips between processes with Lightning
            (one writer assembles the result); e.g. ``devices=2, accelerator="cpu"``.
        compress: compression of the final GeoTIFFs (``deflate``, ``zstd``, ``lzw``...).
    """
    import rasterio

    start_time = time.perf_counter()
    net, spec, file_meta = resolve_model(model)
    meta = metadata if metadata is not None else file_meta
    task = task or (spec.task if spec is not None else ("change" if input_b is not None else "segmentation"))
    if task not in DENSE_TASKS:
        raise ValueError(
            f"predict-raster needs a dense model ({', '.join(DENSE_TASKS)}); this one is a {task} model"
        )
    if (task == "change") != (input_b is not None):
        raise ValueError(
            "change models need two dates: pass the second raster as input_b (--input-b)"
            if task == "change"
            else f"input_b (--input-b) is only for change models; this is a {task} model"
        )
    output = Path(output_path)
    inputs = [Path(input_path)] + ([Path(input_b)] if input_b is not None else [])
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"input raster not found: {path}")
        if path.resolve() == output.resolve():
            raise ValueError(f"the output {output} would overwrite the input; choose another name")
    if vector_crs not in ("raster", "EPSG:4326"):
        raise ValueError(f"vector_crs must be 'raster' or 'EPSG:4326', got {vector_crs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resume and devices > 1:
        raise ValueError("resume works for single-process runs; rerun with devices=1 (or without --resume)")

    net = net.to(device).eval()
    extra = dict(getattr(meta, "extra", None) or {})
    window = int(window) if window is not None else _default_window(extra)
    overlap = int(overlap) if overlap is not None else window // 4
    band_list = parse_bands(bands)
    expected = _expected_bands(net, spec, meta)
    scale = scale if scale is not None else extra.get("input_scale")
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES):
        if input_b is not None:
            check_same_grid(inputs[0], inputs[1])
        readers = [
            SceneReader(
                path,
                bands=band_list,
                expected_bands=expected,
                mean=getattr(meta, "mean", None),
                std=getattr(meta, "std", None),
                scale=scale,
            )
            for path in inputs
        ]
        first = readers[0]
        plan = WindowPlan.create(first.height, first.width, window=window, overlap=overlap)
        channels = _infer_channels(net, spec, meta, task, len(first.bands), plan)
        kind = "values" if task == "regression" else "classes"
        classes = getattr(meta, "classes", None)
        palette = None
        if kind == "classes":
            n_classes = 2 if channels == 1 else channels
            if classes is not None and len(classes) != n_classes:
                raise ValueError(
                    f"the metadata names {len(classes)} classes but the model predicts {n_classes}"
                )
            palette = check_palette(extra["palette"], n_classes) if "palette" in extra else None
            palette = palette or default_palette(n_classes)
        layout = OutputLayout(
            kind=kind,
            channels=channels,
            classes=tuple(classes) if classes else None,
            palette=tuple(palette) if palette else None,
            probabilities=probabilities,
        )
        grid = {"crs": first.crs, "transform": first.transform, "width": first.width, "height": first.height}
        fingerprint = _fingerprint(
            readers,
            window=window,
            overlap=overlap,
            bands=list(first.bands),
            task=task,
            channels=channels,
            probabilities=probabilities,
            scale=first.scale,
            model=_model_digest(net),
        )
        job = Job(plan, readers, layout, grid, task, batch_size, bf16, num_workers, fingerprint)
        output.parent.mkdir(parents=True, exist_ok=True)
        files = PartialFiles(output)
        prob_output = None
        if probabilities is not None:
            prob_output = Path(probabilities_output) if probabilities_output else probabilities_path(output)

        start_strip, create = 0, True
        state = read_state(files.state) if resume else None
        if state is not None:
            differences = _differences(state.get("fingerprint", {}), fingerprint)
            if differences:
                raise ValueError(
                    f"cannot resume {output}: the interrupted run differs ({'; '.join(differences)}). Rerun "
                    "with the same settings, or without --resume to start over"
                )
            if all(p.exists() for p in MapSink(files, grid, layout, create=False).paths()):
                start_strip, create = int(state.get("strips_done", 0)), False
        if create:
            files.remove()

        predictor = WindowPredictor(task, channels, bf16)
        strips = range(start_strip, plan.n_rows)
        windows_run = skipped = 0
        try:
            if len(strips) and devices > 1:
                from rsvit.inference.distributed import predict_distributed

                windows_run, skipped, model_seconds = predict_distributed(
                    job,
                    net,
                    output,
                    devices=devices,
                    accelerator=accelerator,
                    strategy=strategy,
                    progress=progress,
                )
                predictor.model_seconds = model_seconds
            elif len(strips):
                windows_run, skipped = _predict_local(job, net, predictor, strips, files, create, progress)
            resampling = "nearest" if kind == "classes" else "average"
            to_cog(files.main, output, resampling=resampling, compress=compress)
            if prob_output is not None:
                to_cog(files.probabilities, prob_output, resampling="average", compress=compress)
        except InputError:
            files.remove()  # a damaged or unusable input: nothing worth resuming
            raise
        except BaseException as err:
            from rsvit.inference.distributed import HelperRankDone

            if isinstance(err, HelperRankDone):
                raise  # a finished helper rank: the writer rank owns (and is still using) the files
            state_now = read_state(files.state)
            if state_now is None or devices > 1:
                files.remove()
            for rank in range(1, devices):  # shares of other processes, if any were written
                PartialFiles(output, tag=f".rank{rank}").remove()
                output.with_name(f".{output.name}.rank{rank}.stats.json").unlink(missing_ok=True)
            raise
        files.remove()

    features = None
    if vector is not None:
        if kind != "classes":
            raise ValueError("vector output needs a class map; this model predicts values")
        from rsvit.inference.vector import polygonize_raster

        features = polygonize_raster(
            output, vector, classes=layout.class_names(), crs=vector_crs, simplify=vector_simplify
        )
    return PredictionReport(
        output=output,
        probabilities=prob_output,
        vector=Path(vector) if vector is not None else None,
        width=plan.width,
        height=plan.height,
        windows=windows_run,
        skipped_windows=skipped,
        strips=plan.n_rows,
        resumed_from=start_strip,
        seconds=time.perf_counter() - start_time,
        model_seconds=predictor.model_seconds,
        features=features,
        window=window,
        overlap=overlap,
    )


def _predict_local(
    job: Job,
    model: nn.Module,
    predictor: WindowPredictor,
    strips: range,
    files: PartialFiles,
    create: bool,
    progress: bool,
) -> tuple[int, int]:
    """The single-process loop: read, predict, blend and write the windows of ``strips`` in order."""
    from tqdm.auto import tqdm

    indices = job.plan.windows_for_strips(strips)
    runner = ShareRunner(job, strips, files, create=create, record_state=True)
    run = skipped = 0
    try:
        with tqdm(
            total=len(indices), unit="win", desc="predict-raster", disable=not progress, leave=False
        ) as bar:
            for batch in loader_for(job, indices):
                outputs = predictor(model, batch)
                runner.consume(batch, outputs)
                n_skip = int(batch["skip"].sum())
                run += len(outputs) - n_skip
                skipped += n_skip
                bar.update(len(outputs))
    finally:
        runner.close()
    return run, skipped
