"""``rsvit predict-raster``: a whole scene through a dense model, maps out.

Also runnable on its own: ``python -m rsvit.inference.cli --model run/ --input scene.tif --output map.tif``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["add_predict_raster_arguments", "main", "run_predict_raster"]


def add_predict_raster_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``predict-raster`` options to ``parser``."""
    parser.add_argument(
        "--model",
        required=True,
        metavar="RUN_OR_CHECKPOINT",
        help="a training run folder (holding model.safetensors), a .safetensors file from save_model, or an "
        ".onnx file from `rsvit export` (runs on ONNX Runtime)",
    )
    parser.add_argument(
        "--runtime",
        default=None,
        choices=("torch", "onnxruntime"),
        help="run the model with PyTorch or ONNX Runtime (CPU; needs an .onnx file from `rsvit export`, "
        "whose metadata gives bands, mean/std, classes and window); default: onnxruntime for .onnx files",
    )
    parser.add_argument(
        "--input", required=True, metavar="SCENE", help="input raster (GeoTIFF or any GDAL raster)"
    )
    parser.add_argument(
        "--input-b", default=None, metavar="SCENE_B", help="second date, on the same grid, for change models"
    )
    parser.add_argument(
        "--output", required=True, metavar="MAP", help="class map to write (Cloud-Optimized GeoTIFF)"
    )
    parser.add_argument(
        "--probabilities",
        nargs="?",
        const="uint8",
        default=None,
        choices=("uint8", "float16"),
        help="also write per-class probabilities to MAP_probabilities.tif (default uint8: p*254, 255 nodata)",
    )
    parser.add_argument("--vector", default=None, metavar="GEOJSON", help="also write polygons per class")
    parser.add_argument(
        "--vector-crs",
        default="EPSG:4326",
        choices=("EPSG:4326", "raster", "pixel"),
        help="coordinates of the GeoJSON polygons: EPSG:4326 (RFC 7946 longitude/latitude, default), raster "
        "(the raster's CRS, with the legacy crs member) or pixel (column/row, y down; the only choice for a "
        "raster without a CRS)",
    )
    parser.add_argument(
        "--simplify", type=float, default=1.0, help="polygon simplification tolerance in pixels (0: none)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="window size in pixels (default: the model's training or evaluation window, else 512)",
    )
    parser.add_argument(
        "--overlap", type=int, default=None, help="minimum window overlap in pixels (default: window / 4)"
    )
    parser.add_argument(
        "--bands",
        default=None,
        help="1-based bands to use, e.g. 1,2,3, or 1,1,1 to feed one band to a 3-band model (default: the "
        "selection stored with the model, else all bands but alpha)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--bf16", action="store_true", help="run the model in bfloat16 autocast")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run with the same settings"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (without it, an existing map, probabilities or GeoJSON is an "
        "error); the outputs of a run appear together or not at all",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="processes (or GPUs) sharing the work through Lightning (default 1)",
    )
    parser.add_argument(
        "--accelerator",
        default="cpu",
        help="Lightning accelerator when --devices > 1 (cpu, gpu; default cpu)",
    )
    parser.add_argument(
        "--strategy",
        default="ddp_spawn",
        choices=("ddp_spawn", "ddp"),
        help="how Lightning starts the processes when --devices > 1: ddp_spawn (default) or ddp (copies "
        "of this command, e.g. under a cluster launcher)",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="reader processes ahead of the model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Warnings of the run printed as one ``warning:`` line each, as they happen."""

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        print(f"rsvit predict-raster: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def run_predict_raster(args: argparse.Namespace) -> int:
    """Runs ``predict-raster`` from parsed arguments; prints a summary and returns the exit code.

    Errors about the request, the files or the disk come back as one ``error:`` line and exit code 1.
    """
    from rsvit.inference.engine import predict_raster

    try:
        with _warnings_as_lines():
            report = _predict(predict_raster, args)
    except KeyboardInterrupt:
        print(
            "predict-raster: interrupted; nothing was written under the output name. "
            "Finished strips are kept "
            "beside it: run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError) as err:  # InputError, OutputWriteError, FileExistsError among them
        print(f"rsvit predict-raster: error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _predict(predict_raster: Any, args: argparse.Namespace) -> Any:
    return predict_raster(
        args.model,
        args.input,
        args.output,
        input_b=args.input_b,
        window=args.window,
        overlap=args.overlap,
        bands=args.bands,
        batch_size=args.batch_size,
        device=args.device,
        bf16=args.bf16,
        probabilities=args.probabilities,
        vector=args.vector,
        vector_crs=args.vector_crs,
        vector_simplify=args.simplify,
        resume=args.resume,
        progress=not args.quiet,
        devices=args.devices,
        accelerator=args.accelerator,
        strategy=args.strategy,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        runtime=args.runtime,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rsvit.inference.cli``: the ``rsvit predict-raster`` command on its own."""
    parser = argparse.ArgumentParser(
        prog="rsvit predict-raster",
        description="Predict a whole scene window by window and write georeferenced maps in bounded memory.",
    )
    add_predict_raster_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_predict_raster(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"rsvit predict-raster: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
