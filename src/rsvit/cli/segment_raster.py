"""``rsvit segment-raster`` (prompted SAM masks of a GeoTIFF) and ``rsvit masks-raster`` (automatic masks).

Both write a Cloud-Optimized GeoTIFF on the input's grid and, with ``--vector``, GeoJSON polygons (EPSG:4326
unless ``--vector-crs`` says otherwise). Exit status 0 on success, 2 on bad input (message on stderr).
``segment-raster --text "..." --clip-model FILE`` segments what a text describes instead of prompts:
automatic masks (or ``--boxes`` from a detector) scored by CLIP (:mod:`rsvit.inference.text_prompted`).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = [
    "add_masks_raster_arguments",
    "add_segment_raster_arguments",
    "run_masks_raster",
    "run_segment_raster",
]

_DTYPES = {"float32": None, "bfloat16": "bfloat16"}
# the choices of rsvit.models.clip (regions.SCORES, regions.BACKGROUNDS, zeroshot.AVERAGING_RULES), written
# out so that help and argument errors load no torch
_SCORES = ("probability", "cosine")
_BACKGROUNDS = ("blur", "grey", "keep")
_AVERAGING = ("normalise-then-mean", "mean-then-normalise")


def _common(parser: argparse.ArgumentParser) -> None:
    from rsvit.inference.vector import VECTOR_CRS

    parser.add_argument(
        "--model",
        required=True,
        help="promptable model: an rsvit model file, an official SAM .pth or the SAM graphs of rsvit export",
    )
    parser.add_argument("--input", required=True, help="the raster (GeoTIFF or anything GDAL opens)")
    parser.add_argument("--output", required=True, help="the mask GeoTIFF to write (COG)")
    parser.add_argument("--vector", help="also write the masks as GeoJSON polygons")
    parser.add_argument(
        "--vector-crs",
        choices=VECTOR_CRS,
        default="EPSG:4326",
        help="CRS of the polygons (default %(default)s)",
    )
    parser.add_argument("--bands", help="1-based bands to feed the model, e.g. 1,2,3 (default: all)")
    parser.add_argument(
        "--window", type=int, help="window side in pixels (default: the model input size, native resolution)"
    )
    parser.add_argument(
        "--scale", type=float, help="divisor taking raw values to 0-1 (default: the data type's maximum)"
    )
    parser.add_argument(
        "--encoder-dtype", choices=sorted(_DTYPES), default="float32", help="image encoder precision"
    )
    parser.add_argument("--device", help="torch device for the model, e.g. cuda (default: cpu)")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        help="run the model with PyTorch or ONNX Runtime. The two SAM graphs of `rsvit export` (CPU) are "
        "given as OUT.encoder.onnx|pt2, OUT.decoder.onnx|pt2, OUT.onnx|pt2 or OUT; .pt2 graphs run in "
        "PyTorch. Default: onnxruntime for .onnx files, else torch",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_segment_raster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit segment-raster``."""
    _common(parser)
    parser.add_argument(
        "--prompts", help="GeoJSON prompts (points, boxes, scribbles; any CRS); or segment by --text"
    )
    parser.add_argument(
        "--prompt-crs", help="CRS of the prompt coordinates (default: the file's, else EPSG:4326)"
    )
    parser.add_argument(
        "--mode", choices=("ids", "binary"), default="ids", help="prompt ids per pixel or a 0/1 mask"
    )
    parser.add_argument(
        "--polygon-as", choices=("box", "mask"), default="box", help="polygon prompts as their box or a mask"
    )
    parser.add_argument("--cache-size", type=int, default=4, help="window embeddings kept (default 4)")
    _text_arguments(parser)
    return parser


def _automatic_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--overlap", type=int, help="pixels shared by neighbouring windows (default window/4)"
    )
    parser.add_argument("--points-per-side", type=int, default=32, help="point grid side per window")
    parser.add_argument("--points-per-batch", type=int, default=64, help="points decoded together")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, help="minimum predicted IoU")
    parser.add_argument("--stability-thresh", type=float, default=0.95, help="minimum stability score")
    parser.add_argument("--nms-thresh", type=float, default=0.7, help="box IoU of the NMS")
    parser.add_argument("--crop-layers", type=int, default=0, help="crop layers per window")
    parser.add_argument("--min-area", type=int, default=0, help="drop islands and fill holes below (pixels)")


def _text_arguments(parser: argparse.ArgumentParser) -> None:
    text = parser.add_argument_group(
        "text prompts", "segment what --text describes: candidate masks scored against it by CLIP"
    )
    text.add_argument("--text", help="what to find, e.g. 'swimming pool' (instead of --prompts)")
    text.add_argument("--clip-model", help="CLIP checkpoint (.pt/.bin/.safetensors), needed with --text")
    text.add_argument(
        "--clip-arch",
        default="auto",
        help="CLIP preset (e.g. remoteclip-vit-b-32) or open_clip architecture (default: from the keys)",
    )
    text.add_argument(
        "--clip-config", help="open_clip JSON config of the CLIP model (its name is the file's)"
    )
    text.add_argument("--clip-bands", help="1-based RGB bands for CLIP (default: --bands)")
    text.add_argument(
        "--boxes",
        help="candidates from an open-vocabulary detector: GeoJSON box polygons (default: automatic)",
    )
    text.add_argument("--box-crs", help="CRS of the box coordinates (default: the file's, else EPSG:4326)")
    text.add_argument(
        "--templates", help="template set name or text file (default: the CLIP preset's, else rs-general)"
    )
    text.add_argument(
        "--negatives",
        help="comma-separated prompts competing with the text; '' for none (default: land-cover words, "
        "rsvit.models.clip.regions.DEFAULT_NEGATIVES)",
    )
    text.add_argument("--averaging", choices=_AVERAGING, help="class-embedding rule (default: the preset's)")
    text.add_argument("--logit-scale", default="fixed", help="'fixed' (100), 'model', or a number")
    text.add_argument(
        "--score",
        choices=_SCORES,
        default="probability",
        help="softmax over text and negatives, or cosine similarity (default %(default)s)",
    )
    text.add_argument(
        "--threshold", type=float, default=0.5, help="keep regions scoring at least this (default 0.5)"
    )
    text.add_argument("--top-k", type=int, help="keep at most the best K regions")
    text.add_argument(
        "--background",
        choices=_BACKGROUNDS,
        default="blur",
        help="outside the mask in CLIP's crop (default %(default)s)",
    )
    text.add_argument(
        "--margin", type=float, default=0.1, help="crop context, a fraction of the box side (default 0.1)"
    )
    _automatic_arguments(text)


def add_masks_raster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit masks-raster``."""
    _common(parser)
    _automatic_arguments(parser)
    return parser


def _shared(args: argparse.Namespace) -> dict:
    import torch

    from rsvit.inference.reader import parse_bands

    dtype = _DTYPES[args.encoder_dtype]
    return {
        "vector": args.vector,
        "bands": parse_bands(args.bands),
        "window": args.window,
        "scale": args.scale,
        "encoder_dtype": None if dtype is None else getattr(torch, dtype),
        "device": args.device,
        "vector_crs": args.vector_crs,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }


def _run(name: str, call) -> int:
    try:
        summary = call()
    except (FileNotFoundError, ValueError) as err:
        print(f"rsvit {name}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _automatic(args: argparse.Namespace) -> dict:
    """The automatic mask generator's settings (the names of ``masks_raster`` and the generator)."""
    return {
        "points_per_side": args.points_per_side,
        "points_per_batch": args.points_per_batch,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_thresh,
        "box_nms_thresh": args.nms_thresh,
        "crop_n_layers": args.crop_layers,
        "min_mask_region_area": args.min_area,
    }


def _check_prompt_source(args: argparse.Namespace) -> None:
    """Exactly one of --prompts and --text; the text options only with --text."""
    if args.text is not None and args.prompts is not None:
        raise ValueError(
            "--prompts and --text cannot be combined: prompts say where to segment, the text what to find; "
            "run the command once for each"
        )
    if args.text is None:
        if args.prompts is None:
            raise ValueError(
                "give --prompts (a GeoJSON of points, boxes, scribbles) or --text (with --clip-model)"
            )
        stray = [
            flag for flag, value in (("--clip-model", args.clip_model), ("--boxes", args.boxes)) if value
        ]
        if stray:
            raise ValueError(f"{', '.join(stray)} only apply with --text; add --text or leave them out")
        return
    if not args.text.strip():
        raise ValueError("--text is empty; describe what to find, e.g. --text 'swimming pool'")
    if args.clip_model is None:
        raise ValueError(
            "--text needs a CLIP model to score regions against it: add --clip-model PATH (e.g. "
            "RemoteCLIP-ViT-B-32.pt with --clip-arch remoteclip-vit-b-32)"
        )


def _run_text(args: argparse.Namespace) -> dict:
    from rsvit.inference.reader import parse_bands
    from rsvit.inference.text_prompted import text_segment_raster
    from rsvit.models.clip.loading import register_model_config

    arch = register_model_config(args.clip_config) if args.clip_config is not None else args.clip_arch
    return text_segment_raster(
        args.model,
        args.clip_model,
        args.input,
        args.text,
        args.output,
        boxes=args.boxes,
        box_crs=args.box_crs,
        clip_model=arch,
        templates=args.templates,
        negatives=None if args.negatives is None else args.negatives.split(","),
        averaging=args.averaging,
        logit_scale=args.logit_scale,
        score=args.score,
        threshold=args.threshold,
        top_k=args.top_k,
        margin=args.margin,
        background=args.background,
        clip_bands=parse_bands(args.clip_bands),
        cache_size=args.cache_size,
        mode=args.mode,
        overlap=args.overlap,
        runtime=args.runtime,
        automatic=_automatic(args),
        **_shared(args),
    )


def run_segment_raster(args: argparse.Namespace) -> int:
    """Runs ``rsvit segment-raster``; 0 on success, 2 on bad input."""
    from rsvit.inference.promptable import segment_raster

    def call() -> dict:
        _check_prompt_source(args)
        if args.text is not None:
            return _run_text(args)
        return segment_raster(
            args.model,
            args.input,
            args.prompts,
            args.output,
            runtime=args.runtime,
            mode=args.mode,
            prompt_crs=args.prompt_crs,
            polygon_as=args.polygon_as,
            cache_size=args.cache_size,
            **_shared(args),
        )

    return _run("segment-raster", call)


def run_masks_raster(args: argparse.Namespace) -> int:
    """Runs ``rsvit masks-raster``; 0 on success, 2 on bad input."""
    from rsvit.inference.automatic import masks_raster

    def call() -> dict:
        return masks_raster(
            args.model,
            args.input,
            args.output,
            overlap=args.overlap,
            runtime=args.runtime,
            **_automatic(args),
            **_shared(args),
        )

    return _run("masks-raster", call)
