"""SAM export as two graphs: the image encoder (once per image) and the prompt decoder (once per prompt).

SAM's cost is in the encoder; prompts are answered by the small decoder from the stored embedding, so a
deployment runs the two at different times and the export keeps them apart:

* **encoder** (role ``sam-image-encoder``): ``image`` ``(B, C, h, w)``, 0-255 values resized so that the
  longer side is the model's ``img_size`` (``ResizeLongestSide``) -> ``image_embeddings``
  ``(B, E, g, g)``. The graph normalises with SAM's pixel mean/std and pads to ``img_size``.
* **decoder** (role ``sam-prompt-decoder``): ``image_embeddings`` ``(1, E, g, g)``, ``point_coords``
  ``(P, N, 2)`` (x, y in the resized frame), ``point_labels`` ``(P, N)`` (1 foreground, 0 background,
  2 / 3 box top-left / bottom-right corner, -1 padding), ``mask_input`` ``(1, 1, 4g, 4g)`` and
  ``has_mask_input`` ``(1,)`` -> ``low_res_masks`` ``(P, K + 1, 4g, 4g)`` and ``iou_predictions``
  ``(P, K + 1)``: output 0 is the single-mask answer, 1..K the multimask answers. ``P`` prompts and
  ``N`` points per prompt are dynamic. Boxes are two corner points (labels 2 and 3) after the points;
  a prompt without a box ends with one padding point, as SAM's prompt encoder adds it.
  :func:`decoder_inputs` builds these arrays from points, boxes and a mask.

``rsvit export sam.safetensors OUT`` writes ``OUT`` with the suffixes ``.encoder.onnx`` and
``.decoder.onnx`` (or ``.pt2``), see :func:`sam_paths`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsvit.export.errors import ExportError
from rsvit.export.metadata import METADATA_KEY, ExportMetadata
from rsvit.export.tracing import capture_failure
from rsvit.utils.atomic import atomic_path

__all__ = [
    "SamAgreement",
    "SamImageEncoderGraph",
    "SamPromptDecoderGraph",
    "check_sam",
    "check_sam_window",
    "compare_sam_pairs",
    "decoder_inputs",
    "export_sam",
    "load_sam_graph",
    "sam_check_image",
    "sam_paths",
]


def sam_paths(out: str | os.PathLike[str], format: str) -> dict[str, Path]:
    """Where the two graphs go: ``OUT`` less its suffix, plus ``.encoder`` / ``.decoder`` and the format's.

    ``sam.onnx`` -> ``sam.encoder.onnx`` and ``sam.decoder.onnx``; ``sam.pt2`` -> ``sam.encoder.pt2``...
    """
    out = Path(out)
    suffix = ".onnx" if format == "onnx" else ".pt2"
    stem = out.with_suffix("") if out.suffix.lower() in (".onnx", ".pt2") else out
    return {
        "sam-image-encoder": stem.with_name(f"{stem.name}.encoder{suffix}"),
        "sam-prompt-decoder": stem.with_name(f"{stem.name}.decoder{suffix}"),
    }


class SamImageEncoderGraph(nn.Module):
    """Resized 0-255 image -> image embedding (normalisation and padding inside the graph)."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: Tensor) -> Tensor:
        return self.sam.image_encoder(self.sam.preprocess(image))


class SamPromptDecoderGraph(nn.Module):
    """Image embedding and prompts as plain tensors -> low-res mask logits and IoU of every output token.

    The sparse embedding is SAM's prompt encoder written for points whose label says what they are, so
    box corners and padding travel in the same tensors as the points and their numbers can vary.
    """

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def _sparse(self, coords: Tensor, labels: Tensor) -> Tensor:
        encoder = self.prompt_encoder
        labels = labels[..., None]
        emb = encoder.pe_layer.encode_pixels(coords + 0.5, encoder.input_image_size)
        emb = torch.where(labels == -1, encoder.not_a_point_embed.weight, emb)
        for label, embedding in enumerate(encoder.point_embeddings):
            emb = emb + (labels == label) * embedding.weight
        return emb

    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor]:
        encoder = self.prompt_encoder
        sparse = self._sparse(point_coords, point_labels)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = torch.where(
            has_mask_input.reshape(1, 1, 1, 1) > 0, encoder.mask_downscaling(mask_input), no_mask
        )
        return self.mask_decoder.predict_all(image_embeddings, encoder.get_dense_pe(), sparse, dense)


def decoder_inputs(
    sam: Any,
    points: tuple[Tensor, Tensor] | None = None,
    boxes: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``point_coords, point_labels, mask_input, has_mask_input`` for the decoder graph.

    Same arguments as SAM's prompt encoder, in the resized frame: ``points`` ``(P, N, 2)`` and ``(P, N)``
    labels, ``boxes`` ``(P, 4)`` as x0, y0, x1, y1, ``mask`` ``(1, 1, 4g, 4g)`` low-res logits. ``sam``
    is the model or the decoder graph's metadata spec size ``(g, g)`` holder (anything with
    ``prompt_encoder.image_embedding_size``), used for the size of an empty mask.
    """
    parts_xy, parts_label = [], []
    count = points[0].shape[0] if points is not None else boxes.shape[0] if boxes is not None else 1
    if points is not None:
        parts_xy.append(points[0].float())
        parts_label.append(points[1].float())
    if boxes is not None:
        parts_xy.append(boxes.float().reshape(-1, 2, 2))
        parts_label.append(torch.tensor([[2.0, 3.0]]).expand(boxes.shape[0], 2))
    else:
        parts_xy.append(torch.zeros(count, 1, 2))
        parts_label.append(torch.full((count, 1), -1.0))
    g_h, g_w = sam.prompt_encoder.image_embedding_size
    has_mask = torch.ones(1) if mask is not None else torch.zeros(1)
    mask = mask.float() if mask is not None else torch.zeros(1, 1, 4 * g_h, 4 * g_w)
    return torch.cat(parts_xy, 1), torch.cat(parts_label, 1), mask, has_mask


def _examples(sam: Any, spec_in_chans: int) -> dict[str, tuple[Tensor, ...]]:
    size = sam.img_size
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, spec_in_chans, size, size - 16, generator=generator) * 255
    g_h, g_w = sam.prompt_encoder.image_embedding_size
    channels = sam.prompt_encoder.embed_dim
    embedding = torch.randn(1, channels, g_h, g_w, generator=generator)
    coords = torch.rand(2, 3, 2, generator=generator) * size
    labels = torch.tensor([[1.0, 0.0, -1.0], [1.0, 2.0, 3.0]])
    mask = torch.randn(1, 1, 4 * g_h, 4 * g_w, generator=generator)
    return {
        "sam-image-encoder": (image,),
        "sam-prompt-decoder": (embedding, coords, labels, mask, torch.ones(1)),
    }


def _dynamic(role: str) -> tuple:
    dim = torch.export.Dim
    if role == "sam-image-encoder":
        return ({0: dim.DYNAMIC, 2: dim.DYNAMIC, 3: dim.DYNAMIC},)
    prompts, points = dim("prompts", min=1, max=4096), dim("points", min=1, max=256)
    return (None, {0: prompts, 1: points}, {0: prompts, 1: points}, None, None)


def _graphs(sam: nn.Module) -> dict[str, nn.Module]:
    return {"sam-image-encoder": SamImageEncoderGraph(sam), "sam-prompt-decoder": SamPromptDecoderGraph(sam)}


def _capture(graph: nn.Module, role: str, examples: tuple, spec: Any) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return torch.export.export(graph, examples, dynamic_shapes=_dynamic(role))
    except Exception as err:
        raise capture_failure(spec, err, role) from err


def export_sam(
    model: nn.Module,
    metadata: ExportMetadata,
    out: str | os.PathLike[str],
    *,
    format: str,
    opset: int,
    overwrite: bool = False,
    window: tuple[int, int] | None = None,
) -> dict[str, ExportMetadata]:
    """Writes SAM's encoder and decoder graphs to :func:`sam_paths` ``(out, format)``; returns their metadata.

    The encoder keeps height and width dynamic when the captured graph holds at a second size (up to
    ``img_size``; longer sides are refused by the graph), else it is fixed at ``img_size`` square.
    ``window`` (the export's ``--window``) must be ``img_size`` square or absent (:func:`check_sam_window`).
    """
    check_sam_window(model, window)
    paths = sam_paths(out, format)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite (overwrite=True) to replace")
    model = model.eval()
    examples = _examples(model, metadata.spec.in_chans)
    size = (model.img_size, model.img_size)
    written = {}
    for role, graph in _graphs(model).items():
        program = _capture(graph, role, examples[role], metadata.spec)
        meta = metadata.with_changes(role=role, inputs=(), outputs=(), window=size)
        meta = meta.with_changes(
            exporter="torch.export" if format != "onnx" else "dynamo",
            dynamic_batch=True,
            dynamic_spatial=role == "sam-image-encoder",
            static_reason=None if role == "sam-image-encoder" else "the embedding grid is fixed by img_size",
            size_multiple=None,
        )
        with atomic_path(paths[role], suffix=paths[role].suffix) as tmp:
            if format == "onnx":
                _save_onnx(program, meta, tmp, opset)
            else:
                torch.export.save(program, tmp, extra_files={f"{METADATA_KEY}.json": meta.to_json()})
        written[role] = meta
    return written


def check_sam_window(model: Any, window: tuple[int, int] | None = None) -> None:
    """Refuses an export window other than SAM's ``img_size`` square, instead of ignoring it.

    SAM's encoder resizes every image so its longer side is ``img_size`` and pads it to a square, so there
    is no other size to trace at; the raster commands choose their windows with their own ``--window``.
    """
    size = (int(model.img_size), int(model.img_size))
    if window is not None and tuple(window) != size:
        raise ValueError(
            f"--window {window[0]} {window[1]} does not apply to a promptable (SAM) model: its image encoder "
            f"takes the model's img_size square ({size[0]} x {size[1]}) and resizes every image to it. Leave "
            "--window out (or give the img_size); the raster commands tile a scene with their own --window"
        )


def _attention_in_4d(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA on ``(B, N, D)`` tensors as a 4-D call: the ONNX translation only takes 4-D inputs.

    timm's SAM encoder folds the heads into the batch, so its attention arrives in 3-D.
    """
    if q.dim() != 3:
        return NotImplemented
    if attn_mask is not None and attn_mask.dim() == 3:
        attn_mask = attn_mask.unsqueeze(0)
    out = F.scaled_dot_product_attention(
        q.unsqueeze(0),
        k.unsqueeze(0),
        v.unsqueeze(0),
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
    )
    return out.squeeze(0)


def _save_onnx(program, meta: ExportMetadata, target: Path, opset: int) -> None:
    from rsvit.export.onnx import save_program_as_onnx

    program = program.run_decompositions(
        {torch.ops.aten.scaled_dot_product_attention.default: _attention_in_4d}
    )
    save_program_as_onnx(program, meta, target, opset)


class _OnnxGraph:
    """An ONNX Runtime session with tensors in and a tuple of tensors out."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        feeds = {n: t.detach().float().cpu().numpy() for n, t in zip(self.names, inputs, strict=True)}
        return tuple(torch.from_numpy(a) for a in self.session.run(None, feeds))


def load_sam_graph(path: str | os.PathLike[str], threads: int | None = None) -> tuple[Any, ExportMetadata]:
    """``(callable, metadata)`` of one SAM graph file (``.onnx`` on ONNX Runtime, ``.pt2`` in PyTorch)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from rsvit.export.onnx import read_onnx_metadata

        metadata = read_onnx_metadata(path)
        run = _OnnxGraph(path, threads)
    else:
        from rsvit.export.exported_program import load_program

        program, metadata = load_program(path)
        run = program.module()
    if metadata.role not in ("sam-image-encoder", "sam-prompt-decoder"):
        raise ExportError(f"{path} is not a SAM graph (its metadata gives the role {metadata.role!r})")
    return run, metadata


def sam_check_image(data_dir: str | os.PathLike[str], img_size: int, bands: int = 3) -> Tensor:
    """A real NAIP crop (300 x 200 px) resized so its longer side is ``img_size``: ``(1, bands, h, w)``."""
    import rasterio
    from rasterio.windows import Window

    from rsvit.models.promptable.transforms import ResizeLongestSide

    path = Path(data_dir) / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    with rasterio.open(path) as src:
        array = src.read(list(range(1, bands + 1)), window=Window(600, 280, 300, 200))
    resized = ResizeLongestSide(img_size).apply_image(array.transpose(1, 2, 0))
    return torch.from_numpy(resized.astype("float32")).permute(2, 0, 1)[None]


def _check_prompts(size: tuple[int, int]) -> list[dict[str, Any]]:
    """Point, point set, box, box with points and batched boxes, in the resized frame of ``size``."""
    h, w = size
    points = (torch.tensor([[[0.7 * w, 0.3 * h]]]), torch.tensor([[1]]))
    mixed = (
        torch.tensor([[[0.3 * w, 0.5 * h], [0.45 * w, 0.4 * h], [0.7 * w, 0.7 * h]]]),
        torch.tensor([[1, 1, 0]]),
    )
    box = torch.tensor([[0.2 * w, 0.5 * h, 0.6 * w, 0.95 * h]])
    boxes = torch.tensor([[0.8 * w, 0.6 * h, w - 1.0, 0.8 * h], [0.0, 0.0, 0.2 * w, 0.4 * h]])
    return [
        {"points": points},
        {"points": mixed},
        {"boxes": box},
        {"points": (mixed[0][:, :2], mixed[1][:, :2]), "boxes": box},
        {"boxes": boxes},
    ]


def check_sam(
    model: nn.Module, paths: dict[str, Path], image: Tensor, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Both graphs against eager SAM on ``image`` (a resized 0-255 crop) and a set of prompts.

    Returns the :class:`~rsvit.export.check.Comparison` of the embedding, of the low-res mask logits (all
    prompts, all output tokens, one mask prompt included) and of the IoU predictions.
    """
    from rsvit.export.check import compare

    encoder, _ = load_sam_graph(paths["sam-image-encoder"], threads=torch.get_num_threads())
    decoder, _ = load_sam_graph(paths["sam-prompt-decoder"], threads=torch.get_num_threads())
    model = model.eval()
    refs: dict[str, list[Tensor]] = {"masks": [], "iou": []}
    outs: dict[str, list[Tensor]] = {"masks": [], "iou": []}
    with torch.no_grad():
        want_embedding = model.image_encoder(model.preprocess(image))
        embedding = encoder(image)
        embedding = embedding[0] if isinstance(embedding, tuple | list) else embedding
        pe = model.prompt_encoder.get_dense_pe()
        cases = _check_prompts(tuple(image.shape[-2:]))
        first_mask = None
        for case in [*cases, {**cases[0], "mask": "first"}]:
            mask = first_mask if case.get("mask") else None
            points, boxes = case.get("points"), case.get("boxes")
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask)
            masks, iou = model.mask_decoder.predict_all(want_embedding, pe, sparse, dense)
            got_masks, got_iou = decoder(want_embedding, *decoder_inputs(model, points, boxes, mask))
            refs["masks"].append(masks.reshape(-1))
            refs["iou"].append(iou.reshape(-1))
            outs["masks"].append(got_masks.reshape(-1))
            outs["iou"].append(got_iou.reshape(-1))
            if first_mask is None:
                first_mask = masks[:1, int(iou[0, 1:].argmax()) + 1][:, None]
    return {
        "embedding": compare(want_embedding, embedding, tolerance),
        "masks": compare(torch.cat(refs["masks"]), torch.cat(outs["masks"]), tolerance),
        "iou": compare(torch.cat(refs["iou"]), torch.cat(outs["iou"]), tolerance),
    }


_CASE_NAMES = ("point", "point set", "box", "box with points", "two boxes")


@dataclass(frozen=True)
class SamAgreement:
    """How a candidate SAM (an int8 export, say) answers one prompt case compared with a reference.

    ``iou`` and ``equal`` compare the binary masks each model keeps (for a single point the candidate of
    highest predicted IoU, else the single-mask output) at the image's pixels; ``max_score_diff`` is the
    largest difference of the predicted IoUs of every output.
    """

    case: str
    iou: float
    equal: float
    max_score_diff: float

    def __str__(self) -> str:
        return (
            f"{self.case}: mask IoU {self.iou:.4f}, {self.equal:.3%} of pixels equal, "
            f"max score difference {self.max_score_diff:.2g}"
        )


def compare_sam_pairs(reference: Any, candidate: Any, image: Tensor) -> list[SamAgreement]:
    """Both models (a :class:`Sam` or :class:`~rsvit.export.sam_runtime.ExportedSam`) on the check prompts.

    ``image`` is a resized 0-255 crop ``(1, C, h, w)`` (:func:`sam_check_image`); the prompts are those of
    :func:`check_sam`, answered through :class:`~rsvit.models.promptable.SamPredictor` as inference does.
    """
    from rsvit.models.promptable.predictor import SamPredictor

    pixels = image[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    answers = []
    for model in (reference, candidate):
        predictor = SamPredictor(model)
        predictor.set_image(pixels)
        found = []
        for case in _check_prompts(tuple(image.shape[-2:])):
            points, boxes = case.get("points"), case.get("boxes")
            coords, labels = points if points is not None else (None, None)
            multimask = boxes is None and coords is not None and coords.shape[1] == 1
            masks, iou, _ = predictor.predict_torch(coords, labels, boxes, multimask_output=multimask)
            best = iou.argmax(dim=1)
            found.append((masks[torch.arange(len(best)), best], iou))
        answers.append(found)
    results = []
    for name, (want, want_iou), (got, got_iou) in zip(_CASE_NAMES, *answers, strict=True):
        union = (want | got).sum().item()
        results.append(
            SamAgreement(
                name,
                iou=(want & got).sum().item() / union if union else 1.0,
                equal=(want == got).float().mean().item(),
                max_score_diff=(want_iou - got_iou).abs().max().item(),
            )
        )
    return results
