"""The model to run: a module or a model file, and what its description says about inputs and windows."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "RUNTIMES",
    "check_runtime_window",
    "choose_runtime",
    "default_window",
    "expected_bands",
    "model_digest",
    "resolve_model",
    "runtime_settings",
]

RUNTIMES = ("torch", "onnxruntime")


def choose_runtime(model: Any, runtime: str | None) -> str:
    """The runtime asked for, else the one the model's file type implies (``.onnx``: ONNX Runtime)."""
    if runtime is not None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        return runtime
    if isinstance(model, str | os.PathLike) and Path(model).suffix.lower() == ".onnx":
        return "onnxruntime"
    return "torch"


def resolve_model(
    model: nn.Module | str | os.PathLike[str], runtime: str | None = None
) -> tuple[Any, Any, Any]:
    """``(model in eval mode, ModelSpec or None, WeightsMetadata or None)`` from a module or a path.

    A path is a ``.safetensors`` file written by :func:`rsvit.models.save_model` or a run folder holding
    ``model.safetensors``, or a ``.pt2`` archive written by ``rsvit export --format exported-program``;
    with ``runtime="onnxruntime"`` (the default for ``.onnx`` files) it is an ONNX file written by
    ``rsvit export``. An exported file's embedded metadata stands in for the model file's.
    """
    if choose_runtime(model, runtime) == "onnxruntime":
        return _onnx_model(model)
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
    if path.suffix == ".onnx":
        raise ValueError(
            f"{path} is an ONNX file: run it with the onnxruntime runtime (--runtime onnxruntime)"
        )
    if path.suffix.lower() == ".pt2":
        return _program_model(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path} is not an rsvit model file (the .safetensors a training run or "
            "rsvit.models.save_model writes, or an ONNX or .pt2 file from rsvit export). An official "
            "checkpoint holds weights only: build the network with rsvit.models.build_model, copy them in "
            "with rsvit.weights.load_into, then save_model it"
        )
    return load_model(path)


def _onnx_model(model: Any) -> tuple[Any, Any, Any]:
    if isinstance(model, nn.Module):
        raise ValueError(
            "runtime onnxruntime runs an exported file: pass the .onnx path written by `rsvit export`, "
            "not a module"
        )
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if path.suffix.lower() != ".onnx":
        raise ValueError(
            f"runtime onnxruntime needs an .onnx file written by `rsvit export`, got {path}; export it "
            "with `rsvit export MODEL OUT.onnx`, or use runtime torch"
        )
    from rsvit.export.runtime import OnnxRuntimeModel

    # as many ONNX Runtime threads as PyTorch uses, so OMP_NUM_THREADS and torch.set_num_threads hold
    net = OnnxRuntimeModel(path, threads=torch.get_num_threads())
    return net, net.metadata.spec, net.metadata.weights


def _program_model(path: Path) -> tuple[Any, Any, Any]:
    from rsvit.export.exported_program import ExportedProgramModel

    net = ExportedProgramModel(path)
    return net, net.metadata.spec, net.metadata.weights


def _is_exported(net: Any) -> bool:
    graph = sys.modules.get("rsvit.export.graph_model")  # not imported: no exported model exists yet
    return graph is not None and isinstance(net, graph.ExportedGraphModel)


def runtime_settings(
    net: Any,
    window: int | None,
    batch_size: int,
    *,
    bf16: bool,
    device: Any,
    devices: int,
) -> tuple[int | None, int]:
    """``(window, batch size)`` an exported model (ONNX or ``.pt2``) can run with; refuses what it cannot do.

    A graph traced at a fixed size (UperNet's pyramid pooling) takes only that window, so it becomes the
    window and a different one asked for is an error; a graph without a dynamic batch runs one window at a
    time. A PyTorch module passes through unchanged.
    """
    if not _is_exported(net):
        return window, batch_size
    name = net.path.name
    if bf16:
        raise ValueError(
            f"bf16 is a PyTorch autocast option for model files; {name} is an exported graph and runs in "
            "float32 (for a faster CPU graph quantise an ONNX export to int8 with "
            "rsvit.export.quantize_int8), or run the .safetensors model file with --bf16"
        )
    if torch.device(device).type != "cpu" or devices > 1:
        raise ValueError(
            f"{name} runs in this process on {net.runtime_name}: use device cpu and devices 1, or the "
            "PyTorch model file for GPUs and several processes"
        )
    meta = net.metadata
    if not meta.dynamic_batch:
        batch_size = 1
    if meta.dynamic_spatial:
        return window, batch_size
    height, width = meta.window
    if height != width:
        raise ValueError(
            f"{name} only takes {height}x{width} windows ({meta.static_reason}); the raster engine runs "
            "square windows: re-export with a square window, e.g. `rsvit export MODEL OUT --window "
            f"{max(height, width)}`"
        )
    if window is not None and int(window) != height:
        raise ValueError(
            f"{name} was exported for {height}x{width} windows only ({meta.static_reason}), so --window "
            f"{window} cannot be used: drop --window (it defaults to {height}) or re-export with --window "
            f"{window}"
        )
    return height, batch_size


def check_runtime_window(net: Any, window_height: int, window_width: int) -> None:
    """Refuse windows an exported graph cannot take.

    A fixed-size graph cannot take the smaller window a raster smaller than it gets; a graph that holds
    only at multiples of a stride cannot take windows in between.
    """
    if not _is_exported(net):
        return
    multiple = net.metadata.size_multiple
    if net.metadata.dynamic_spatial and multiple and (window_height % multiple or window_width % multiple):
        raise ValueError(
            f"{net.path.name} gives correct outputs only for windows whose sides are multiples of "
            f"{multiple} pixels, and this run has {window_height}x{window_width} windows: pass a --window "
            f"that is a multiple of {multiple} (and no larger than the raster), or use runtime torch"
        )
    if net.metadata.dynamic_spatial:
        return
    height, width = net.metadata.window
    if (window_height, window_width) != (height, width):
        raise ValueError(
            f"{net.path.name} only takes {height}x{width} windows ({net.metadata.static_reason}), but the "
            f"raster is smaller ({window_height}x{window_width} windows): re-export the model with a window "
            "that fits the raster, or use runtime torch"
        )


def _first_conv_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            return module.in_channels if isinstance(module, nn.Conv2d) else None
    return None


def expected_bands(model: nn.Module, spec: Any, metadata: Any) -> int | None:
    """Input bands the model wants: from its metadata or spec, else its first convolution (if any)."""
    if metadata is not None and metadata.input_size:
        return int(metadata.input_size[0])
    if metadata is not None and metadata.mean is not None:
        return len(metadata.mean)
    if spec is not None:
        return int(spec.in_chans)
    return _first_conv_channels(model)


def default_window(extra: dict[str, Any]) -> int:
    """The window the model file recommends (``extra["window"]``, an int or a square ``[h, w]``), else 512."""
    window = extra.get("window")
    if isinstance(window, list | tuple) and len(window) == 2 and window[0] == window[1]:
        window = window[0]
    return int(window) if isinstance(window, int) and window > 0 else 512


def model_digest(model: nn.Module) -> str:
    """A digest of the weights, so that ``resume`` never continues a run made with other weights."""
    h = hashlib.sha256()
    if _is_exported(model):
        with open(model.path, "rb") as f:  # the graph file holds the weights
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        return h.hexdigest()[:32]
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]
