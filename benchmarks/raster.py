"""Large-scene inference benchmark: peak memory must not grow with the scene, the engine must cost little.

    bash scripts/in-env python benchmarks/raster.py            # 2000 x 2000 and 20000 x 20000 px
    bash scripts/in-env python benchmarks/raster.py --quick    # 2000 x 2000 only

Writes synthetic tiled RGB GeoTIFFs to a temporary folder (removed at the end), then runs each through a
small convolutional segmentation model with :func:`rsvit.inference.predict_raster`, each size in its own
process so that peak RSS (``getrusage``) is measured independently. Prints peak RSS, seconds per megapixel
and the engine overhead: total time over the model's pure forward time on the same windows (timed inside
the run). Targets: RSS growth < 10 % from the small to the large scene, overhead <= 1.15x.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RSS_GROWTH = 0.10
TARGET_OVERHEAD = 1.15


def write_scene(path: Path, size: int, rows_per_chunk: int = 512) -> None:
    """A tiled, uncompressed RGB GeoTIFF with smooth fields and noise, written chunk by chunk."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32632",
        "transform": from_origin(300000.0, 5200000.0, 0.5, 0.5),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "bigtiff": "if_safer",
    }
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, rows_per_chunk):
            rows = min(rows_per_chunk, size - r0)
            y = np.arange(r0, r0 + rows, dtype=np.float32)[:, None]
            field = np.sin(x[None, :] / 97.0) * np.cos(y / 61.0)
            chunk = np.empty((3, rows, size), dtype=np.uint8)
            for band in range(3):
                noise = rng.integers(0, 40, size=(rows, size), dtype=np.uint8)
                chunk[band] = (110 + 80 * field * (band + 1) / 3).astype(np.uint8) + noise
            dst.write(chunk, window=Window(0, r0, size, rows))


def small_model():
    """A cheap segmentation network (two 3x3 convs, 2 classes), deterministic weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 2, 1),
    ).eval()


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints a JSON line with the figures."""
    from rsvit.inference import predict_raster
    from rsvit.weights import WeightsMetadata

    metadata = WeightsMetadata(classes=("background", "object"), mean=(0.45,) * 3, std=(0.25,) * 3)
    report = predict_raster(
        small_model(),
        args.input,
        args.output,
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        metadata=metadata,
        progress=False,
    )
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "megapixels": report.megapixels,
                "seconds": report.seconds,
                "model_seconds": report.model_seconds,
                "windows": report.windows,
                "peak_rss_mib": rss_kib / 1024,
            }
        )
    )


def run_size(size: int, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    scene = folder / f"scene_{size}.tif"
    start = time.perf_counter()
    write_scene(scene, size)
    print(f"  wrote {scene.name} in {time.perf_counter() - start:.0f} s", flush=True)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--input",
        str(scene),
        "--output",
        str(folder / f"map_{size}.tif"),
        "--window",
        str(args.window),
        "--overlap",
        str(args.overlap),
        "--batch-size",
        str(args.batch_size),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    scene.unlink()
    (folder / f"map_{size}.tif").unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="only the 2000 x 2000 scene")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sizes = [2000] if args.quick else [2000, 20000]
    results = {}
    with tempfile.TemporaryDirectory(prefix="rsvit-raster-bench-") as tmp:
        for size in sizes:
            print(f"{size} x {size} px ...", flush=True)
            results[size] = run_size(size, Path(tmp), args)
    print(f"\nwindow {args.window}, overlap {args.overlap}, batch {args.batch_size}")
    print(f"{'scene':>14} {'MP':>7} {'peak RSS MiB':>13} {'s/MP':>7} {'overhead':>9}")
    for size, r in results.items():
        overhead = r["seconds"] / r["model_seconds"]
        print(
            f"{size:>6} x {size:<6}{r['megapixels']:>7.0f} {r['peak_rss_mib']:>13.0f} "
            f"{r['seconds'] / r['megapixels']:>7.3f} {overhead:>8.2f}x"
        )
    overheads = {s: r["seconds"] / r["model_seconds"] for s, r in results.items()}
    worst = max(overheads.values())
    print(
        f"overhead target <= {TARGET_OVERHEAD}x: "
        f"{'met' if worst <= TARGET_OVERHEAD else 'NOT met'} ({worst:.2f}x)"
    )
    if len(sizes) == 2:
        small, large = (results[s]["peak_rss_mib"] for s in sizes)
        growth = large / small - 1
        verdict = "met" if growth < TARGET_RSS_GROWTH else "NOT met"
        print(f"RSS growth target < {TARGET_RSS_GROWTH:.0%}: {verdict} ({growth:+.1%})")


if __name__ == "__main__":
    main()
