"""What both exporters need: example inputs, dynamic dimensions, and the models that cannot have them.

Some layers compute their shapes in Python from the input size, so the traced graph only holds for the
example size. Those are listed here with the reason, and their graphs are exported with a fixed spatial
size (the batch stays dynamic); every other graph is still verified at a second size after export, which
is how ViTAEv2 (window partitions reshaped with traced sizes) ends up with a fixed size in ONNX, while
ResNet/ViT classifiers, DPT and BIT (including its tokens) keep dynamic sizes. A dynamic graph is also
verified at a size between multiples of the stride; one that fails there (sizes rounded while tracing,
seen with BIT on a ResNet) records that it holds only at multiples, which runners then enforce.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rsvit.export.errors import ExportError
from rsvit.models import ModelSpec

log = logging.getLogger(__name__)

__all__ = [
    "EXPORTABLE_TASKS",
    "STRIDE",
    "capture_failure",
    "check_exportable",
    "dynamic_shapes",
    "example_inputs",
    "model_name",
    "named_operator",
    "second_size",
    "size_multiple",
    "static_spatial_reason",
    "uneven_size",
    "verify_callable",
]

EXPORTABLE_TASKS = ("classification", "segmentation", "change", "regression")
EXAMPLE_BATCH = 2  # not 1: a size-1 example lets the tracer specialise the batch dimension


def model_name(spec: ModelSpec) -> str:
    """``task/backbone/head``, the name errors give a model."""
    return f"{spec.task}/{spec.backbone}/{spec.head}"


def capture_failure(spec: ModelSpec, err: BaseException, part: str = "") -> ExportError:
    """The error for a model (or one graph ``part`` of it) that ``torch.export`` could not capture."""
    operator = named_operator(err) or "an unnamed operator"
    part = f" ({part})" if part else ""
    return ExportError(
        f"model {model_name(spec)}{part} cannot be captured by torch.export (operator {operator}): "
        f"{str(err).splitlines()[0][:300]}"
    )


def check_exportable(spec: ModelSpec) -> None:
    """Refuse task families whose models cannot be exported yet, naming the model."""
    if spec.task not in EXPORTABLE_TASKS:
        raise ExportError(
            f"model {model_name(spec)}: task {spec.task!r} cannot be exported yet; exportable tasks are "
            f"{', '.join(EXPORTABLE_TASKS)}, and detection and promptable through rsvit.export.export_model"
        )


def example_inputs(spec: ModelSpec, window: tuple[int, int], batch: int = EXAMPLE_BATCH) -> tuple:
    """Seeded random inputs of the model's shape to trace with (two images for change models)."""
    shape = (batch, spec.in_chans, *window)
    count = 2 if spec.task == "change" else 1
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(shape, generator=generator) for _ in range(count))


def static_spatial_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot take other spatial sizes once traced, or ``None`` when it can.

    UperNet's pyramid pooling averages into 2, 3 and 6 bins: the bin edges are computed from the feature
    size while tracing and stored as constants, so the graph only fits the traced size.
    """
    for module in model.modules():
        scales = getattr(module, "pool_scales", None)
        if scales is not None and any(int(s) > 1 for s in scales):
            return (
                f"{type(module).__name__} (adaptive average pooling to {tuple(scales)} bins) has bin edges "
                "fixed by the traced size"
            )
        if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            size = module.output_size
            sizes = size if isinstance(size, tuple) else (size, size)
            if any(s is not None and s > 1 for s in sizes):
                return f"{type(module).__name__}({size}) has bin edges fixed by the traced size"
    return None


def dynamic_shapes(count: int, spatial: bool) -> tuple[dict[int, object], ...]:
    """Dynamic batch (and, with ``spatial``, height and width) for each of ``count`` inputs."""
    dims: dict[int, object] = {0: torch.export.Dim.DYNAMIC}
    if spatial:
        dims.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    return tuple(dict(dims) for _ in range(count))


def second_size(window: tuple[int, int]) -> tuple[int, int]:
    """Another spatial size to verify a dynamic graph at (still a multiple of the deepest stride, 32)."""
    return (window[0] + 32, window[1] + 64)


STRIDE = 32


def uneven_size(window: tuple[int, int]) -> tuple[int, int]:
    """A size that is not a multiple of the deepest stride.

    Graphs whose size arithmetic was specialised to exact multiples while tracing go wrong there.
    """
    return (window[0] + STRIDE // 2 + 1, window[1] + STRIDE + 9)


def size_multiple(
    run: Callable[..., torch.Tensor], model: nn.Module, spec: ModelSpec, window: tuple[int, int]
) -> int | None:
    """``None`` when a dynamic graph also holds between multiples of the stride, else the stride.

    A graph traced at multiples of the stride can hold at other multiples yet be wrong in between (sizes
    rounded while tracing); the raster engine then has to keep to the multiples.
    """
    failure = verify_callable(run, model, example_inputs(spec, uneven_size(window), batch=1))
    if failure is None:
        return None
    log.warning("%s: the graph holds only at multiples of %d pixels (%s)", model_name(spec), STRIDE, failure)
    return STRIDE


_OPERATOR = re.compile(
    r"(?:torch\.ops\.)?(aten[.:]{1,2}[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|[A-Za-z0-9_]+::[A-Za-z0-9_.]+)"
)


def named_operator(error: BaseException) -> str | None:
    """The operator an exporter complained about, taken from its message, if it names one."""
    text = str(error)
    for cause in (error.__cause__, error.__context__):
        if cause is not None:
            text += "\n" + str(cause)
    match = _OPERATOR.search(text)
    return match.group(1) if match else None


def verify_callable(
    run: Callable[..., torch.Tensor],
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    tolerance: float = 1e-4,
) -> str | None:
    """Runs ``run`` and ``model`` on ``inputs``; returns what went wrong, or ``None`` when they agree."""
    try:
        with torch.no_grad():
            got = run(*inputs)
    except Exception as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    with torch.no_grad():
        want = model(*inputs)
    if tuple(got.shape) != tuple(want.shape):
        return f"output shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    span = float(want.max() - want.min()) or 1.0
    diff = float((got.float() - want.float()).abs().max())
    if diff > tolerance * span:
        return f"outputs differ by {diff:.3g} (range {span:.3g})"
    return None
