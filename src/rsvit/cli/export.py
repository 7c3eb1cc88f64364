r"""``rsvit export MODEL OUT --format onnx|exported-program``: a saved model as a deployable graph.

The exported file carries the model spec, bands, mean/std, classes and palette, so it runs without the
source file. Detectors' ONNX graphs stop before the per-class rotated NMS (ONNX has none), which the
runner applies from the stored settings; SAM exports to two graphs,
``OUT`` with ``.encoder.onnx`` / ``.decoder.onnx`` (or ``.pt2``) in place of its suffix. Every export
is compared with the eager model (real images from ``--check-data``, else a random batch) and the
command fails when the outputs differ by more than 1e-4 of their range::

    rsvit export seg.safetensors seg.onnx --format onnx --window 512 512 --check-data shared/data \
        --int8 seg.int8.onnx
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

__all__ = ["add_export_arguments", "run_export"]

log = logging.getLogger(__name__)


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit export``."""
    from rsvit.export.api import FORMATS
    from rsvit.export.onnx import DEFAULT_OPSET

    parser.add_argument("model", help="model file written by rsvit (safetensors with a model spec)")
    parser.add_argument("out", help="exported file to write (.onnx or .pt2)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    parser.add_argument(
        "--window",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="spatial size to trace at (default: the model's input_size, else 256 256); the only size a "
        "graph with a fixed spatial size accepts",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument(
        "--check-data", help="folder of real samples (shared/data layout) to compare against eager PyTorch"
    )
    parser.add_argument("--int8", metavar="PATH", help="also write an int8 dynamically quantised ONNX model")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser


def _exported_runner(args: argparse.Namespace):
    """The written file, callable like the eager model (detectors return detection dicts)."""
    if args.format == "onnx":
        from rsvit.export.runtime import OnnxRuntimeModel

        return OnnxRuntimeModel(args.out)
    from rsvit.export.exported_program import ExportedProgramModel

    return ExportedProgramModel(args.out)


def _check(args: argparse.Namespace, model, meta, batches):
    """The exported graph against the eager model: outputs for dense models, detections for detectors."""
    from rsvit.export.check import compare_detections, compare_models

    compare = compare_detections if meta.spec.task == "detection" else compare_models
    return compare(model, _exported_runner(args), batches)


def _report_sam(args: argparse.Namespace, model) -> int:
    """Prints SAM's two graph files and their check against eager SAM (a real crop, else random pixels).

    With ``--int8 Q.onnx`` it then writes the int8 pair (``Q.encoder.onnx``, ``Q.decoder.onnx``) and reports,
    per prompt case of the check, how its masks and scores differ from the fp32 pair's.
    """
    from rsvit.export.promptable import check_sam, sam_check_image, sam_paths

    paths = sam_paths(args.out, args.format)
    for role, path in paths.items():
        print(f"wrote {path} ({role})")
    int8_paths = sam_paths(args.int8, "onnx") if args.int8 else {}
    existing = [str(p) for p in int8_paths.values() if p.exists()]
    if existing and not args.overwrite:
        print(f"rsvit export: {', '.join(existing)} exist(s); pass --overwrite to replace", file=sys.stderr)
        return 2
    if args.check_data:
        image = sam_check_image(args.check_data, model.img_size, model.pixel_mean.shape[0])
        source = "a real NAIP crop"
    else:
        size = model.img_size
        image = torch.rand(1, model.pixel_mean.shape[0], size, size * 2 // 3) * 255
        source = "random pixels (pass --check-data for a real image)"
    results = check_sam(model, paths, image)
    for name, result in results.items():
        print(f"check of the {name} against eager SAM on {source}: {result}")
    if not all(r.ok for r in results.values()):
        return 1
    if args.int8:
        from rsvit.export.promptable import compare_sam_pairs
        from rsvit.export.quantize import quantize_sam_int8
        from rsvit.export.sam_runtime import OnnxSam

        written = quantize_sam_int8(args.out, args.int8, overwrite=args.overwrite)
        for role, path in written.items():
            print(f"wrote {path} ({role}, int8)")
        threads = torch.get_num_threads()
        fp32 = OnnxSam(*paths.values(), threads=threads)
        int8 = OnnxSam(*written.values(), threads=threads)
        for agreement in compare_sam_pairs(fp32, int8, image):
            print(f"int8 against fp32 on {source}, {agreement}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Runs ``rsvit export``; returns the exit status (1 when the check fails, 2 on bad input)."""
    from pathlib import Path

    from rsvit.export.api import export_model
    from rsvit.export.check import argmax_agreement, compare, real_inputs
    from rsvit.export.errors import ExportError, MissingMetadataError
    from rsvit.export.tracing import example_inputs

    if args.int8 and args.format != "onnx":
        print("rsvit export: --int8 needs --format onnx", file=sys.stderr)
        return 2
    if args.int8 and Path(args.int8).exists() and not args.overwrite:
        print(f"rsvit export: {args.int8} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        model, meta = export_model(
            args.model,
            args.out,
            format=args.format,
            window=tuple(args.window) if args.window else None,
            opset=args.opset,
            overwrite=args.overwrite,
        )
    except (ExportError, MissingMetadataError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"rsvit export: {err}", file=sys.stderr)
        return 2
    if isinstance(meta, dict):
        return _report_sam(args, model)
    height, width = meta.window
    spatial = "dynamic" if meta.dynamic_spatial else f"fixed {height}x{width} ({meta.static_reason})"
    batch = "dynamic" if meta.dynamic_batch else "one image"
    print(f"wrote {args.out} with the {meta.exporter} exporter; batch {batch}, height/width {spatial}")
    if args.check_data:
        batches = real_inputs(meta.spec, meta.weights, args.check_data, meta.window)
        source = f"{len(batches)} real image(s)"
    else:
        batches = [example_inputs(meta.spec, meta.window, batch=1)]  # one image: detectors take one
        source = "a random batch (pass --check-data for real images)"
    result = _check(args, model, meta, batches)
    print(f"check against eager PyTorch on {source}: {result}")
    if not result.ok:
        return 1
    if args.int8:
        from rsvit.export.quantize import quantize_int8
        from rsvit.export.runtime import OnnxRuntimeModel

        quantize_int8(args.out, args.int8, overwrite=args.overwrite)
        fp32, int8 = OnnxRuntimeModel(args.out), OnnxRuntimeModel(args.int8)
        if meta.spec.task == "detection":
            from rsvit.export.check import compare_detections

            # int8 moves boxes and scores by more than the export tolerances: judge it at 1 px and 0.01
            close = compare_detections(fp32, int8, batches, box_tolerance=1.0, score_tolerance=0.01)
            print(f"int8 model {args.int8} against fp32: {close}")
            return 0
        with torch.no_grad():
            ref = torch.cat([fp32(*b) for b in batches])
            got = torch.cat([int8(*b) for b in batches])
        if meta.spec.task == "regression":
            print(f"int8 model {args.int8}: {compare(ref, got, tolerance=float('inf'))} against fp32")
        else:
            print(f"int8 model {args.int8}: argmax agrees with fp32 on {argmax_agreement(ref, got):.2%}")
    return 0
