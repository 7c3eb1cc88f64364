"""Large-scene inference: a GeoTIFF of any size in, georeferenced maps out, in bounded memory.

:func:`predict_raster` is a composition: check the request, plan windows over the scene
(:mod:`~rsvit.inference.plan`), open the readers (:mod:`~rsvit.inference.reader`) and the output kind
registered for the model's task (:mod:`~rsvit.inference.outputs`), run the windows through the model in
batches (:mod:`~rsvit.inference.runner`, or several processes with :mod:`~rsvit.inference.distributed`),
and finalise the files. Everything that can be checked is checked before anything is written (settings,
inputs, georeferencing for the requested vectors, existing outputs), and the outputs of a run (map,
probabilities, polygons) are written under temporary names and renamed together, so they appear together
or not at all; a failure there is one :class:`OutputWriteError` and leaves what ``resume`` needs to
finalise again. For dense tasks the output blends overlapping windows with smooth weights and
writes finished cells straight to partial GeoTIFFs, which become Cloud-Optimized GeoTIFFs at the end:
memory depends on the window, the batch and the raster width, not on the raster height.

>>> report = predict_raster("runs/seg", "scene.tif", "map.tif", vector="map.geojson")  # doctest: +SKIP
>>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsvit.inference.change import check_same_grid
from rsvit.inference.job import Job, fingerprint_differences, inputs_fingerprint
from rsvit.inference.model import (
    check_runtime_window,
    default_window,
    expected_bands,
    model_digest,
    resolve_model,
    runtime_settings,
)
from rsvit.inference.outputs import (
    ModelFacts,
    OutputRequest,
    RasterOutput,
    output_for_task,
    raster_tasks,
)
from rsvit.inference.plan import WindowPlan
from rsvit.inference.reader import InputError, SceneReader, parse_bands
from rsvit.inference.report import PredictionReport, RasterWarning
from rsvit.inference.runner import HelperRankDone, WindowPredictor, remove_rank_files, run_share
from rsvit.inference.vector import VECTOR_CRS
from rsvit.inference.writer import PartialFiles, read_state

__all__ = ["OutputWriteError", "PredictionReport", "predict_raster", "resolve_model"]


class OutputWriteError(OSError):
    """Finalising the outputs failed (disk full, permissions...); none of them was left under its name."""


_GDAL_CACHE_BYTES = 16 * 2**20  # bounded block cache: GDAL's default (5% of RAM) would grow with the scene


def __getattr__(name: str) -> Any:
    if name == "DENSE_TASKS":
        warnings.warn(
            "rsvit.inference.engine.DENSE_TASKS is deprecated; use rsvit.inference.outputs.raster_tasks()",
            DeprecationWarning,
            stacklevel=2,
        )
        return raster_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    vector_crs: str = "EPSG:4326",
    vector_simplify: float = 1.0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    metadata: Any = None,
    task: str | None = None,
    scale: float | None = None,
    num_workers: int = 0,
    devices: int = 1,
    accelerator: str = "cpu",
    strategy: str = "ddp_spawn",
    compress: str = "deflate",
    runtime: str | None = None,
) -> PredictionReport:
    """Predicts a whole scene window by window and writes georeferenced maps.

    Args:
        model: a module, a ``.safetensors`` file from :func:`rsvit.models.save_model`, or a run folder
            holding ``model.safetensors`` (its metadata supplies classes, palette, mean/std and bands).
        input_path: the scene (any raster GDAL reads).
        output_path: the class map (values for regression models), a Cloud-Optimized GeoTIFF on the
            input's grid (same CRS, transform and size), nodata where the input was nodata; class maps
            carry their class names for GIS tools in ``<output>.aux.xml`` (GDAL category names and
            attribute table).
        input_b: the second date for change models, on the same pixel grid.
        window: window size in pixels. Default: the one the model file recommends (``extra["window"]``:
            the evaluation window of a sliding-window model, or the training crop of a change model,
            whose tokens pool over the whole input), otherwise 512.
        overlap: minimum overlap of neighbouring windows in pixels (default: a quarter of the window).
        bands: 1-based bands to feed the model (``"1,2,3"`` or a sequence); default: the selection stored
            in the model file (``extra["bands"]``), else all bands minus alpha.
        batch_size: windows per forward pass.
        device: where the model runs.
        bf16: run the model under bfloat16 autocast.
        probabilities: ``"uint8"`` or ``"float16"`` to also write per-class probabilities.
        probabilities_output: where they go (default ``<output>_probabilities.tif``).
        vector: a GeoJSON file of polygons per class.
        vector_crs: ``"EPSG:4326"`` (RFC 7946, the default), the ``"raster"`` CRS (with the legacy
            ``crs`` member) or ``"pixel"`` coordinates (column, row: y points down), the only choice for
            a raster without a CRS.
        vector_simplify: simplification tolerance of the polygons in pixels.
        resume: continue an interrupted run of the same settings from the strips already written.
        overwrite: replace existing output files (otherwise an existing one is an error). The outputs of
            a run (map, probabilities, polygons) are renamed into place together at the end: they appear
            together or not at all.
        progress: show a progress bar (windows/s and ETA).
        metadata: a ``WeightsMetadata`` for a bare module (overrides the file's for a path).
        task: a task with a registered output kind (``segmentation``, ``change``, ``regression``; see
            :func:`rsvit.inference.outputs.raster_tasks`); default from the model file, else ``change``
            with ``input_b`` and ``segmentation`` otherwise.
        scale: divisor turning raw values into model units (default: integer dtype maximum, 1 for floats,
            or the metadata's ``extra["input_scale"]``).
        num_workers: DataLoader processes reading windows ahead of the model.
        devices: ``devices > 1`` shares the strips between processes with Lightning (one writer
            assembles the result); e.g. ``devices=2, accelerator="cpu"``.
        accelerator: Lightning's accelerator for those processes.
        strategy: Lightning's strategy for them (``ddp_spawn`` or ``ddp``).
        compress: compression of the final GeoTIFFs (``deflate``, ``zstd``, ``lzw``...).
        runtime: ``"torch"`` or ``"onnxruntime"`` (an ONNX file from ``rsvit export``, run alone on the
            CPU from its embedded metadata; a fixed-size export sets the window). Default: ``onnxruntime``
            for ``.onnx`` files, else ``torch``.
    """
    import rasterio

    start_time = time.perf_counter()
    # 1. validate: the settings, the model, its task's output kind, the paths
    _check_settings(window, overlap, batch_size, devices, vector_crs)
    net, spec, file_meta = resolve_model(model, runtime)
    window, batch_size = runtime_settings(net, window, batch_size, bf16=bf16, device=device, devices=devices)
    meta = metadata if metadata is not None else file_meta
    task = task or (spec.task if spec is not None else ("change" if input_b is not None else "segmentation"))
    kind = _output_kind(task, input_b)
    output = Path(output_path)
    inputs = [Path(input_path)] + ([Path(input_b)] if input_b is not None else [])
    _check_request(inputs, output, resume, devices)
    request = OutputRequest(
        output=output,
        probabilities=probabilities,
        probabilities_output=Path(probabilities_output) if probabilities_output else None,
        vector=Path(vector) if vector is not None else None,
        vector_crs=vector_crs,
        vector_simplify=vector_simplify,
        compress=compress,
    )
    # 2. plan: window settings from the call or the model file, readers, windows
    net = net.to(device).eval()
    extra = dict(getattr(meta, "extra", None) or {})
    window = int(window) if window is not None else default_window({"window": kind.default_window, **extra})
    overlap = int(overlap) if overlap is not None else _default_overlap(kind, window)
    scale = scale if scale is not None else extra.get("input_scale")
    chosen_bands = parse_bands(bands) if bands is not None else _stored_bands(extra)
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES):
        readers = _open_readers(inputs, chosen_bands, expected_bands(net, spec, meta), meta, scale)
        _check_georeferencing(readers[0], request)
        plan = WindowPlan.create(readers[0].height, readers[0].width, window=window, overlap=overlap)
        check_runtime_window(net, plan.window_height, plan.window_width)
        # 3. open the output: settle the kind for this model, then create or continue its partial files
        facts = ModelFacts(net, spec, meta, task, len(readers[0].bands), len(readers), plan)
        settings = {"window": window, "overlap": overlap, "task": task}
        job = _job(readers, plan, kind.settle(facts, request), net, settings, batch_size, bf16, num_workers)
        finals = job.output.final_paths(request)
        _check_overwrite(finals, inputs, overwrite)
        output.parent.mkdir(parents=True, exist_ok=True)
        files = PartialFiles(output)
        start_strip, create = _resume_point(job, files, output, resume)
        strips = range(start_strip, plan.n_rows)
        # 4. run the remaining strips, 5. finalise: every output to a temporary name, then all renamed
        try:
            windows_run, skipped, model_seconds = _run(
                job, net, files, strips, create, devices, accelerator, strategy, progress
            )
            products = _finalise(job.output, files, request, finals)
        except BaseException as err:
            _clean_up(err, files, output, devices)
            raise
        files.remove()
    if windows_run == 0 and skipped > 0 and start_strip == 0:
        warnings.warn(
            f"{inputs[0]} holds only nodata pixels (in the bands read): {output} is all nodata. Check the "
            "input, its nodata value and --bands",
            RasterWarning,
            stacklevel=2,
        )
    return PredictionReport(
        output=output,
        probabilities=products.probabilities,
        vector=products.vector,
        width=plan.width,
        height=plan.height,
        windows=windows_run,
        skipped_windows=skipped,
        strips=plan.n_rows,
        resumed_from=start_strip,
        seconds=time.perf_counter() - start_time,
        model_seconds=model_seconds,
        features=products.features,
        window=window,
        overlap=overlap,
    )


def _check_settings(
    window: int | None, overlap: int | None, batch_size: int, devices: int, vector_crs: str
) -> None:
    """The numeric settings and choices, checked before anything is opened."""
    if window is not None and int(window) < 1:
        raise ValueError(f"the window must be at least 1 pixel (e.g. --window 512), got {window}")
    if overlap is not None and int(overlap) < 0:
        raise ValueError(f"the overlap cannot be negative (e.g. --overlap 128), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    if vector_crs not in VECTOR_CRS:
        raise ValueError(f"vector_crs must be one of {', '.join(VECTOR_CRS)}, got {vector_crs!r}")


def _default_overlap(kind: type[RasterOutput], window: int) -> int:
    """The kind's overlap when it fits the window (less than half of it), else a quarter of the window."""
    if kind.default_overlap is not None and kind.default_overlap < window // 2:
        return kind.default_overlap
    return window // 4


def _stored_bands(extra: dict[str, Any]) -> tuple[int, ...] | None:
    """The band selection stored with the model (``extra["bands"]``, 1-based), if any."""
    stored = extra.get("bands")
    if stored is None:
        return None
    try:
        return parse_bands(list(stored))
    except (TypeError, ValueError):
        raise ValueError(
            f"the model file stores an invalid band selection {stored!r}; pass --bands explicitly"
        ) from None


def _check_georeferencing(reader: SceneReader, request: OutputRequest) -> None:
    """A raster without a CRS: the map cannot be placed on Earth, polygons only in pixel coordinates."""
    if reader.crs is not None:
        return
    if request.vector is not None and request.vector_crs != "pixel":
        raise ValueError(
            f"{reader.path} has no CRS, so its polygons cannot be written in {request.vector_crs}: "
            "georeference the raster (e.g. gdal_edit.py -a_srs), or pass vector_crs='pixel' "
            "(--vector-crs pixel) for column/row coordinates"
        )
    warnings.warn(
        f"{reader.path} has no CRS (not georeferenced, e.g. a JPEG): {request.output} will not be "
        "georeferenced either",
        RasterWarning,
        stacklevel=3,
    )


def _check_overwrite(finals: list[Path], inputs: list[Path], overwrite: bool) -> None:
    for path in finals:
        if any(path.resolve() == p.resolve() for p in inputs):
            raise ValueError(f"the output {path} would overwrite the input; choose another name")
    existing = [str(p) for p in finals if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass overwrite=True "
            "(--overwrite) to replace, or choose another output name"
        )


def _staged(path: Path, token: str) -> Path:
    return path.with_name(f".{path.name}.{token}.staged{path.suffix}")


def _with_sidecars(path: Path) -> list[Path]:
    """A file and the PAM sidecar GDAL reads beside it (category names, attribute table)."""
    return [path, path.with_name(f"{path.name}.aux.xml")]


def _finalise(output: RasterOutput, files: PartialFiles, request: OutputRequest, finals: list[Path]) -> Any:
    """Writes every output under a temporary name, then renames them all; on failure removes them all.

    Raises :class:`OutputWriteError` (one line: what failed and that nothing was left) when writing fails.
    """
    token = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    staged = replace(
        request,
        output=_staged(request.output, token),
        probabilities_output=(
            _staged(request.probabilities_output, token) if request.probabilities_output is not None else None
        ),
        vector=_staged(request.vector, token) if request.vector is not None else None,
    )
    pairs = list(zip(output.final_paths(staged), finals, strict=True))  # same kind, same order
    renamed: list[Path] = []
    try:
        products = output.derive(staged, output.finish(files, staged))
        for tmp, final in pairs:
            for tmp_file, final_file in zip(_with_sidecars(tmp), _with_sidecars(final), strict=True):
                if tmp_file.exists():
                    os.replace(tmp_file, final_file)
                    renamed.append(final_file)
                elif tmp_file != tmp:
                    final_file.unlink(missing_ok=True)  # a sidecar of an overwritten file no longer applies
    except BaseException as err:
        for tmp, _ in pairs:
            for path in _with_sidecars(tmp):
                path.unlink(missing_ok=True)
        for path in renamed:
            path.unlink(missing_ok=True)
        if isinstance(err, ValueError) or not isinstance(err, Exception):
            raise  # a refusal with its own words, or Ctrl-C
        names = ", ".join(str(p) for p in finals)
        reason = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else str(err).strip()
        raise OutputWriteError(
            f"writing the outputs failed ({reason.rstrip('.')}); nothing was left under {names}. Free "
            "space or fix the folder, then rerun the same command with --resume to finalise without "
            "predicting again"
        ) from err
    back = {tmp: final for tmp, final in pairs}
    return replace(
        products,
        probabilities=back.get(products.probabilities, products.probabilities),
        vector=back.get(products.vector, products.vector),
    )


def _output_kind(task: str, input_b: Any) -> type[RasterOutput]:
    """The output kind registered for ``task``, checked against the number of inputs given."""
    kind = output_for_task(task)
    if kind is None:
        raise ValueError(
            f"predict-raster needs a dense model ({', '.join(raster_tasks())}); this one is a {task} model"
        )
    dates = kind.tasks[task]
    if dates == 2 and input_b is None:
        raise ValueError(f"{task} models need two dates: pass the second raster as input_b (--input-b)")
    if dates == 1 and input_b is not None:
        two_dates = [t for t in raster_tasks() if output_for_task(t).tasks[t] == 2]  # type: ignore[union-attr]
        raise ValueError(
            f"input_b (--input-b) is only for {' and '.join(two_dates)} models; this is a {task} model"
        )
    return kind


def _check_request(inputs: list[Path], output: Path, resume: bool, devices: int) -> None:
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"input raster not found: {path}")
        if path.resolve() == output.resolve():
            raise ValueError(f"the output {output} would overwrite the input; choose another name")
    if resume and devices > 1:
        raise ValueError("resume works for single-process runs; rerun with devices=1 (or without --resume)")


def _open_readers(
    inputs: list[Path], bands: Sequence[int] | None, expected: int | None, meta: Any, scale: float | None
) -> list[SceneReader]:
    """One reader per date; two dates must lie on one pixel grid."""
    if len(inputs) == 2:
        check_same_grid(inputs[0], inputs[1])
    return [
        SceneReader(
            path,
            bands=bands,
            expected_bands=expected,
            mean=getattr(meta, "mean", None),
            std=getattr(meta, "std", None),
            scale=scale,
        )
        for path in inputs
    ]


def _job(
    readers: list[SceneReader],
    plan: WindowPlan,
    output: RasterOutput,
    net: nn.Module,
    settings: dict[str, Any],
    batch_size: int,
    bf16: bool,
    num_workers: int,
) -> Job:
    """The job and its fingerprint (``settings``: the requested window, overlap and task)."""
    first = readers[0]
    grid = {"crs": first.crs, "transform": first.transform, "width": first.width, "height": first.height}
    fingerprint = inputs_fingerprint(
        readers,
        window=settings["window"],
        overlap=settings["overlap"],
        bands=list(first.bands),
        task=settings["task"],
        **output.fingerprint(),
        scale=first.scale,
        model=model_digest(net),
    )
    return Job(plan, readers, output, grid, settings["task"], batch_size, bf16, num_workers, fingerprint)


def _resume_point(job: Job, files: PartialFiles, output: Path, resume: bool) -> tuple[int, bool]:
    """``(first strip to run, whether to create the partial files)``; clears what cannot be resumed."""
    start_strip, create = 0, True
    state = read_state(files.state) if resume else None
    if state is not None:
        differences = fingerprint_differences(state.get("fingerprint", {}), job.fingerprint)
        if differences:
            raise ValueError(
                f"cannot resume {output}: the interrupted run differs ({'; '.join(differences)}). Rerun "
                "with the same settings, or without --resume to start over"
            )
        if all(p.exists() for p in job.output.partial_paths(files, job.grid)):
            start_strip, create = int(state.get("strips_done", 0)), False
    if create:
        files.remove()
    return start_strip, create


def _run(
    job: Job,
    net: nn.Module,
    files: PartialFiles,
    strips: range,
    create: bool,
    devices: int,
    accelerator: str,
    strategy: str,
    progress: bool,
) -> tuple[int, int, float]:
    """Runs ``strips`` in this process or in ``devices`` processes: ``(run, skipped, model seconds)``."""
    if not len(strips):
        return 0, 0, 0.0
    if devices > 1:
        from rsvit.inference.distributed import predict_distributed

        return predict_distributed(
            job,
            net,
            files.output,
            devices=devices,
            accelerator=accelerator,
            strategy=strategy,
            progress=progress,
        )
    predictor = WindowPredictor(job.output, job.bf16)
    run, skipped = run_share(job, net, predictor, strips, files, create, progress)
    return run, skipped, predictor.model_seconds


def _clean_up(err: BaseException, files: PartialFiles, output: Path, devices: int) -> None:
    """After a failure: keep what ``resume`` can continue from, remove everything else."""
    if isinstance(err, InputError):
        files.remove()  # a damaged or unusable input: nothing worth resuming
        return
    if isinstance(err, HelperRankDone):
        return  # a finished helper rank: the writer rank owns (and is still using) the files
    if read_state(files.state) is None or devices > 1:
        files.remove()
    remove_rank_files(output, devices)
