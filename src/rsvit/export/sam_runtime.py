"""The two exported SAM graphs run on ONNX Runtime, shaped like the :class:`Sam` that the predictors take.

:class:`~rsvit.models.promptable.SamPredictor` (and through it the raster commands and the automatic mask
generator) asks a model for four things: embed a resized image (``preprocess`` + ``image_encoder``), turn
prompts into the decoder's inputs (``prompt_encoder``), decode them against an embedding
(``mask_decoder``) and upscale the low-res logits (``postprocess_masks``). :class:`OnnxSam` answers them
with the encoder graph and the decoder graph, so the predictors run unchanged on an export.

Which files: ``OUT.encoder.onnx`` or ``OUT.decoder.onnx`` (either one names the pair), ``OUT.onnx`` (the
name given to ``rsvit export``) or ``OUT``; the pair is ``OUT.encoder.onnx`` and ``OUT.decoder.onnx``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from rsvit.export.metadata import ExportMetadata
from rsvit.export.promptable import _OnnxGraph, decoder_inputs, sam_paths

__all__ = ["OnnxSam", "load_onnx_sam", "sam_pair"]

_ROLE_SUFFIXES = {".encoder.onnx": "sam-image-encoder", ".decoder.onnx": "sam-prompt-decoder"}


def sam_pair(model: str | os.PathLike[str]) -> dict[str, Path]:
    """The encoder and decoder files that ``model`` names (see the module docstring for the rule)."""
    path = Path(model)
    for suffix in _ROLE_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return sam_paths(path.with_name(path.name[: -len(suffix)]), "onnx")
    return sam_paths(path, "onnx")


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

    def __init__(self, graph: _OnnxGraph) -> None:
        self.graph = graph

    def __call__(
        self,
        image_embeddings: Tensor,
        image_pe: None,
        prompts: tuple[Tensor, ...],
        dense: None,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        masks, iou = self.graph(image_embeddings, *prompts)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou[:, keep]


class OnnxSam:
    """SAM's encoder and decoder graphs on ONNX Runtime's CPU provider, usable wherever a :class:`Sam` is.

    Args:
        encoder: the ``sam-image-encoder`` ONNX file.
        decoder: the ``sam-prompt-decoder`` ONNX file.
        threads: intra-op threads of each session (``None``: ONNX Runtime's default).

    Raises:
        MissingMetadataError: a file carries no rsvit metadata.
        ValueError: a file is not the SAM graph its place asks for.
    """

    runtime_name = "ONNX Runtime's CPU provider"

    def __init__(
        self, encoder: str | os.PathLike[str], decoder: str | os.PathLike[str], threads: int | None = None
    ) -> None:
        self.paths = {"sam-image-encoder": Path(encoder), "sam-prompt-decoder": Path(decoder)}
        self.metadata = {role: _read_role(path, role) for role, path in self.paths.items()}
        meta = self.metadata["sam-image-encoder"]
        self.img_size = int(meta.window[0])
        config = meta.spec.head_kwargs or {}
        self.mask_threshold = float(config.get("mask_threshold", 0.0))
        # SamPredictor counts the bands and finds the device from this buffer
        self.pixel_mean = torch.tensor(config.get("pixel_mean", [0.0] * meta.spec.in_chans)).view(-1, 1, 1)
        self._encoder = _OnnxGraph(self.paths["sam-image-encoder"], threads)
        decoder_graph = _OnnxGraph(self.paths["sam-prompt-decoder"], threads)
        self.prompt_encoder = _PromptInputs(_embedding_grid(decoder_graph, self.paths["sam-prompt-decoder"]))
        self.mask_decoder = _MaskDecoder(decoder_graph)

    @property
    def spec(self):
        return self.metadata["sam-image-encoder"].spec

    def eval(self) -> OnnxSam:
        return self

    def to(self, device: str | torch.device) -> OnnxSam:
        """Stays on the CPU; any other device is an error rather than a silent CPU run."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"the exported SAM graphs run on {self.runtime_name}; use device cpu")
        return self

    def preprocess(self, image: Tensor) -> Tensor:
        """Nothing to do: the encoder graph normalises and pads itself."""
        return image

    def image_encoder(self, image: Tensor) -> Tensor:
        return self._encoder(image)[0]

    def postprocess_masks(
        self, masks: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Tensor:
        from rsvit.models.promptable.sam import Sam

        # the same upscaling as the PyTorch model; it reads nothing but img_size from the model
        return Sam.postprocess_masks(self, masks, input_size, original_size)


def _read_role(path: Path, role: str) -> ExportMetadata:
    from rsvit.export.onnx import read_onnx_metadata

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the exported SAM is two files, OUT.encoder.onnx and OUT.decoder.onnx, "
            "written by `rsvit export SAM_MODEL OUT.onnx`"
        )
    metadata = read_onnx_metadata(path)
    if metadata.role != role:
        what = "a whole model" if metadata.role == "model" else f"the role {metadata.role!r}"
        raise ValueError(
            f"{path} holds {what} ({metadata.spec.task} {metadata.spec.backbone}), not the {role} graph of "
            "an exported SAM; pass OUT.encoder.onnx, OUT.decoder.onnx or OUT from `rsvit export SAM OUT.onnx`"
        )
    return metadata


def _embedding_grid(graph: _OnnxGraph, path: Path) -> tuple[int, int]:
    """``(g, g)`` from the decoder's fixed ``mask_input`` shape ``(1, 1, 4g, 4g)``."""
    shape = graph.session.get_inputs()[graph.names.index("mask_input")].shape
    if not all(isinstance(s, int) for s in shape[-2:]):
        raise ValueError(f"{path}: the decoder's mask_input has no fixed size ({shape}); re-export it")
    return shape[-2] // 4, shape[-1] // 4


def load_onnx_sam(model: str | os.PathLike[str], threads: int | None = None) -> OnnxSam:
    """The exported SAM pair that ``model`` names (:func:`sam_pair`), on ONNX Runtime."""
    paths = sam_pair(model)
    return OnnxSam(paths["sam-image-encoder"], paths["sam-prompt-decoder"], threads=threads)
