"""The two exported SAM graphs, shaped like the :class:`Sam` that the predictors take.

:class:`~rsvit.models.promptable.SamPredictor` (and through it the raster commands and the automatic mask
generator) asks a model for four things: embed a resized image (``preprocess`` + ``image_encoder``), turn
prompts into the decoder's inputs (``prompt_encoder``), decode them against an embedding
(``mask_decoder``) and upscale the low-res logits (``postprocess_masks``). :class:`ExportedSam` answers them
with any two graph callables, so the predictors run unchanged on an export in either format:

* :class:`OnnxSam`: the ``.onnx`` pair on ONNX Runtime's CPU provider;
* :class:`ProgramSam`: the ``.pt2`` pair (``torch.export`` programs) in PyTorch on the CPU.

Which files: ``OUT.encoder.onnx`` or ``OUT.decoder.onnx`` (either one names the pair), ``OUT.onnx`` (the
name given to ``rsvit export``) or ``OUT``; the pair is ``OUT.encoder.onnx`` and ``OUT.decoder.onnx``.
The same rule holds for ``.pt2``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from rsvit.export.metadata import ExportMetadata
from rsvit.export.promptable import _OnnxGraph, decoder_inputs, sam_paths

__all__ = [
    "ExportedSam",
    "OnnxSam",
    "ProgramSam",
    "load_exported_sam",
    "load_onnx_sam",
    "load_program_sam",
    "pair_format",
    "sam_pair",
]

ENCODER, DECODER = "sam-image-encoder", "sam-prompt-decoder"
_SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2"}
_EXPORT_HINT = {"onnx": "OUT.onnx", "exported-program": "OUT.pt2 --format exported-program"}


def pair_format(model: str | os.PathLike[str]) -> str | None:
    """``"onnx"`` or ``"exported-program"`` when ``model``'s suffix says which, else ``None``."""
    suffix = Path(model).suffix.lower()
    return next((fmt for fmt, ending in _SUFFIXES.items() if ending == suffix), None)


def sam_pair(model: str | os.PathLike[str], format: str = "onnx") -> dict[str, Path]:
    """The encoder and decoder files that ``model`` names (see the module docstring for the rule)."""
    path = Path(model)
    for part in (".encoder", ".decoder"):
        ending = part + _SUFFIXES[format]
        if path.name.lower().endswith(ending):
            return sam_paths(path.with_name(path.name[: -len(ending)]), format)
    return sam_paths(path, format)


class _PromptInputs:
    """Stands in for SAM's prompt encoder: the prompts become the decoder graph's input tensors."""

    def __init__(self, grid: tuple[int, int]) -> None:
        self.image_embedding_size = grid
        self.mask_input_size = (4 * grid[0], 4 * grid[1])

    def __call__(
        self, points: tuple[Tensor, Tensor] | None, boxes: Tensor | None, masks: Tensor | None
    ) -> tuple[tuple[Tensor, ...], None]:
        if masks is not None and masks.shape[0] != 1:
            raise ValueError(
                f"the exported decoder shares one mask prompt between the prompts of a call, got "
                f"{masks.shape[0]}; decode prompts with masks one at a time"
            )
        # decoder_inputs reads the grid size from a model's prompt encoder
        return decoder_inputs(SimpleNamespace(prompt_encoder=self), points, boxes, masks), None

    def get_dense_pe(self) -> None:
        """The positional encoding is inside the decoder graph."""
        return None


class _MaskDecoder:
    """The decoder graph, returning the single-mask or the multimask outputs as SAM's mask decoder does."""

    def __init__(self, graph: Callable[..., Any]) -> None:
        self.graph = graph

    def __call__(
        self,
        image_embeddings: Tensor,
        image_pe: None,
        prompts: tuple[Tensor, ...],
        dense: None,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        masks, iou = self.graph(image_embeddings.float(), *prompts)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]


class ExportedSam:
    """SAM's encoder and decoder graphs, usable wherever a :class:`Sam` is (on the CPU).

    Args:
        encoder: ``image (B, C, h, w) -> image_embeddings`` (a tensor or a one-tensor tuple).
        decoder: ``image_embeddings, point_coords, point_labels, mask_input, has_mask_input ->
            (low_res_masks, iou_predictions)``, as :mod:`rsvit.export.promptable` writes it.
        metadata: the two graphs' metadata by role.
        grid: ``(g, g)``, the embedding grid the decoder takes.
        runtime_name: what runs the graphs, for messages.
    """

    def __init__(
        self,
        encoder: Callable[[Tensor], Any],
        decoder: Callable[..., Any],
        metadata: Mapping[str, ExportMetadata],
        grid: tuple[int, int],
        runtime_name: str,
    ) -> None:
        self.metadata = dict(metadata)
        self.runtime_name = runtime_name
        meta = self.metadata[ENCODER]
        self.img_size = int(meta.window[0])
        config = meta.spec.head_kwargs or {}
        self.mask_threshold = float(config.get("mask_threshold", 0.0))
        # SamPredictor counts the bands and finds the device from this buffer
        self.pixel_mean = torch.tensor(config.get("pixel_mean", [0.0] * meta.spec.in_chans)).view(-1, 1, 1)
        self._encoder = encoder
        self.prompt_encoder = _PromptInputs(grid)
        self.mask_decoder = _MaskDecoder(decoder)

    @property
    def spec(self):
        return self.metadata[ENCODER].spec

    def eval(self) -> ExportedSam:
        return self

    def to(self, device: str | torch.device) -> ExportedSam:
        """Stays on the CPU; any other device is an error rather than a silent CPU run."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"the exported SAM graphs run on {self.runtime_name}; use device cpu")
        return self

    def preprocess(self, image: Tensor) -> Tensor:
        """Nothing to do: the encoder graph normalises and pads itself."""
        return image

    def image_encoder(self, image: Tensor) -> Tensor:
        out = self._encoder(image.float())
        return out[0] if isinstance(out, tuple | list) else out

    def postprocess_masks(
        self, masks: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Tensor:
        from rsvit.models.promptable.sam import Sam

        # the same upscaling as the PyTorch model; it reads nothing but img_size from the model
        return Sam.postprocess_masks(self, masks, input_size, original_size)


class OnnxSam(ExportedSam):
    """The ``.onnx`` pair on ONNX Runtime's CPU provider.

    Args:
        encoder: the ``sam-image-encoder`` ONNX file.
        decoder: the ``sam-prompt-decoder`` ONNX file.
        threads: intra-op threads of each session (``None``: ONNX Runtime's default).

    Raises:
        MissingMetadataError: a file carries no rsvit metadata.
        ValueError: a file is not the SAM graph its place asks for.
    """

    def __init__(
        self, encoder: str | os.PathLike[str], decoder: str | os.PathLike[str], threads: int | None = None
    ) -> None:
        from rsvit.export.onnx import read_onnx_metadata

        self.paths = {ENCODER: Path(encoder), DECODER: Path(decoder)}
        metadata = {
            role: _check_role(path, role, "onnx", read_onnx_metadata) for role, path in self.paths.items()
        }
        graphs = {role: _OnnxGraph(path, threads) for role, path in self.paths.items()}
        decoder_graph = graphs[DECODER]
        shape = decoder_graph.session.get_inputs()[decoder_graph.names.index("mask_input")].shape
        grid = _grid_of(shape, self.paths[DECODER])
        super().__init__(graphs[ENCODER], decoder_graph, metadata, grid, "ONNX Runtime's CPU provider")


class ProgramSam(ExportedSam):
    """The ``.pt2`` pair (``torch.export`` programs) run in PyTorch on the CPU.

    Only load archives you trust: ``torch.export.load`` rebuilds the graphs from the files.

    Raises:
        MissingMetadataError: a file carries no rsvit metadata.
        ValueError: a file is not the SAM graph its place asks for.
    """

    def __init__(self, encoder: str | os.PathLike[str], decoder: str | os.PathLike[str]) -> None:
        from rsvit.export.exported_program import load_program

        self.paths = {ENCODER: Path(encoder), DECODER: Path(decoder)}
        programs: dict[str, torch.export.ExportedProgram] = {}

        def read(path: Path) -> ExportMetadata:
            programs[str(path)], metadata = load_program(path)
            return metadata

        metadata = {
            role: _check_role(path, role, "exported-program", read) for role, path in self.paths.items()
        }
        encoder_program = programs[str(self.paths[ENCODER])]
        decoder_program = programs[str(self.paths[DECODER])]
        grid = _grid_of(_program_input_shape(decoder_program, 3), self.paths[DECODER])
        super().__init__(
            encoder_program.module(), decoder_program.module(), metadata, grid, "PyTorch on the CPU"
        )


def _check_role(path: Path, role: str, format: str, read: Callable[[Path], ExportMetadata]) -> ExportMetadata:
    if not path.is_file():
        suffix = _SUFFIXES[format]
        raise FileNotFoundError(
            f"{path} not found: the exported SAM is two files, OUT.encoder{suffix} and OUT.decoder{suffix}, "
            f"written by `rsvit export SAM_MODEL {_EXPORT_HINT[format]}`"
        )
    metadata = read(path)
    if metadata.role != role:
        suffix = _SUFFIXES[format]
        what = "a whole model" if metadata.role == "model" else f"the role {metadata.role!r}"
        raise ValueError(
            f"{path} holds {what} ({metadata.spec.task} {metadata.spec.backbone}), not the {role} graph of "
            f"an exported SAM; pass OUT.encoder{suffix}, OUT.decoder{suffix} or OUT from "
            f"`rsvit export SAM {_EXPORT_HINT[format]}`"
        )
    return metadata


def _program_input_shape(program: torch.export.ExportedProgram, index: int) -> tuple:
    """The traced shape of a program's user input ``index`` (symbols for dynamic sizes)."""
    name = program.graph_signature.user_inputs[index]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return tuple(node.meta["val"].shape)


def _grid_of(shape: Any, path: Path) -> tuple[int, int]:
    """``(g, g)`` from the decoder's fixed ``mask_input`` shape ``(1, 1, 4g, 4g)``."""
    sides = list(shape)[-2:]
    if not all(isinstance(s, int) for s in sides):
        raise ValueError(f"{path}: the decoder's mask_input has no fixed size ({shape}); re-export it")
    return sides[0] // 4, sides[1] // 4


def _pair_of(model: str | os.PathLike[str], format: str) -> dict[str, Path]:
    """:func:`sam_pair`, refusing a file that exists but is neither graph (a whole exported model, say)."""
    paths = sam_pair(model, format)
    named = Path(model)
    if named.is_file() and named not in paths.values():
        if format == "onnx":
            from rsvit.export.onnx import read_onnx_metadata as read
        else:
            from rsvit.export.exported_program import load_program

            def read(path: Path) -> ExportMetadata:
                return load_program(path)[1]

        _check_role(named, ENCODER, format, read)
    return paths


def load_onnx_sam(model: str | os.PathLike[str], threads: int | None = None) -> OnnxSam:
    """The exported ``.onnx`` SAM pair that ``model`` names (:func:`sam_pair`), on ONNX Runtime."""
    paths = _pair_of(model, "onnx")
    return OnnxSam(paths[ENCODER], paths[DECODER], threads=threads)


def load_program_sam(model: str | os.PathLike[str]) -> ProgramSam:
    """The exported ``.pt2`` SAM pair that ``model`` names (:func:`sam_pair`), in PyTorch."""
    paths = _pair_of(model, "exported-program")
    return ProgramSam(paths[ENCODER], paths[DECODER])


def load_exported_sam(model: str | os.PathLike[str], format: str, threads: int | None = None) -> ExportedSam:
    """The pair in ``format`` (``"onnx"`` on ONNX Runtime, ``"exported-program"`` in PyTorch)."""
    if format == "onnx":
        return load_onnx_sam(model, threads=threads)
    return load_program_sam(model)
