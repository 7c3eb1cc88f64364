"""``rsvit segment-raster`` (prompted SAM masks of a GeoTIFF) and ``rsvit masks-raster`` (automatic masks).

Both write a Cloud-Optimized GeoTIFF on the input's grid and, with ``--vector``, GeoJSON polygons (EPSG:4326
unless ``--vector-crs`` says otherwise). Exit status 0 on success, 2 on bad input (message on stderr).
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


def _common(parser: argparse.ArgumentParser) -> None:
    from rsvit.inference.vector import VECTOR_CRS

    parser.add_argument(
        "--model", required=True, help="promptable model: an rsvit model file or an official SAM .pth"
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_segment_raster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit segment-raster``."""
    _common(parser)
    parser.add_argument(
        "--prompts", required=True, help="GeoJSON prompts (points, boxes, scribbles; any CRS)"
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
    return parser


def add_masks_raster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit masks-raster``."""
    _common(parser)
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


def run_segment_raster(args: argparse.Namespace) -> int:
    """Runs ``rsvit segment-raster``; 0 on success, 2 on bad input."""
    from rsvit.inference.promptable import segment_raster

    def call() -> dict:
        return segment_raster(
            args.model,
            args.input,
            args.prompts,
            args.output,
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
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh,
            box_nms_thresh=args.nms_thresh,
            crop_n_layers=args.crop_layers,
            min_mask_region_area=args.min_area,
            **_shared(args),
        )

    return _run("masks-raster", call)
