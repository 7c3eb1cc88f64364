"""Deployment paths of Oriented R-CNN on real DOTA patches: eager fp32, bf16 autocast, ONNX Runtime fp32
and int8, in the same run, interleaved rounds.

    bash scripts/in-env python benchmarks/detection_export.py [--backbone resnet50] [--window 1024]
        [--rounds 3] [--threads 2]

The detector (random seeded weights, 15 classes, the official test settings) is saved as a model file,
exported to ONNX with ``rsvit export``'s code path (the graph stops before the per-class rotated NMS,
which :class:`rsvit.export.OnnxRuntimeModel` runs from the stored settings) and quantised (MatMul/Gemm
weights to int8: the box head's two FC layers). Each round runs every path once on every patch, in a
rotated order; the table shows seconds per image (median and range over the rounds, after a warm-up)
and how many of eager fp32's detections each path reproduces: same class, with the box within 1e-3 px
and the score within 1e-4 (the export check, :class:`rsvit.export.DetectionComparison`), and within
1 px and 0.01 (what bf16 and int8 can hope for). Random heads give near-tied scores
everywhere, the worst case for that count. Patches: DOTA P0706 and P1888 (``shared/data``), top-left
crops zero-padded to the window.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SHARED = Path(os.environ.get("RSVIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
IMAGES = ("P0706.png", "P1888.png")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_patch(path: Path, size: int) -> torch.Tensor:
    """``(1, 3, size, size)`` normalised image: the top-left crop, zero-padded where smaller."""
    image = np.asarray(Image.open(path).convert("RGB"))[:size, :size]
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return F.pad(x, (0, size - x.shape[3], 0, size - x.shape[2]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from rsvit.export import OnnxRuntimeModel, compare_detections, export_model, quantize_int8
    from rsvit.models import ModelSpec, build_model, save_model
    from rsvit.weights import WeightsMetadata

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    patches = [load_patch(SHARED / "data" / "dota-samples" / "images" / name, args.window) for name in IMAGES]
    spec = ModelSpec("detection", args.backbone, num_classes=15)
    size = (3, args.window, args.window)
    folder = Path(tempfile.mkdtemp(prefix="rsvit-det-export-"))
    source, onnx_path, int8_path = folder / "det.safetensors", folder / "det.onnx", folder / "det.int8.onnx"
    save_model(source, build_model(spec).eval(), spec, WeightsMetadata(mean=MEAN, std=STD, input_size=size))
    start = time.perf_counter()
    model, _ = export_model(source, onnx_path, format="onnx")
    exported = time.perf_counter() - start
    quantize_int8(onnx_path, int8_path)
    model = model.eval()
    fp32 = OnnxRuntimeModel(onnx_path, threads=args.threads)
    int8 = OnnxRuntimeModel(int8_path, threads=args.threads)
    print(
        f"{spec.task}/{spec.backbone}, {len(patches)} DOTA patches of {args.window}², "
        f"{args.threads} threads; "
        f"ONNX export {exported:.1f} s; files {onnx_path.stat().st_size / 1e6:.1f} MB fp32, "
        f"{int8_path.stat().st_size / 1e6:.1f} MB int8"
    )

    def eager(x: torch.Tensor) -> list[dict]:
        with torch.no_grad():
            return model(x)

    def bf16(x: torch.Tensor) -> list[dict]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    paths = {"eager fp32": eager, "eager bf16": bf16, "ORT fp32": fp32, "ORT int8": int8}
    times: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for round_ in range(args.rounds + 1):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            for x in patches:
                paths[name](x)
            if round_:  # round 0 warms up
                times[name].append((time.perf_counter() - start) / len(patches))
    base = statistics.median(times["eager fp32"])
    print(f"{'path':<11} {'s/image':>8} {'range':>15} {'vs eager fp32':>14}  {'exact':>7}  {'close':>7}")
    batches = [(x,) for x in patches]
    for name, fn in paths.items():
        median = statistics.median(times[name])
        span = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        line = f"{name:<11} {median:8.3f} {span:>15} {base / median:13.2f}x"
        if name != "eager fp32":
            exact = compare_detections(model, fn, batches)
            close = compare_detections(model, fn, batches, box_tolerance=1.0, score_tolerance=0.01)
            line += f"  {exact.share:7.2%}  {close.share:7.2%}"
        print(line)
    print(
        "exact: share of eager fp32's detections reproduced within the export tolerances (box 1e-3 px, "
        "score 1e-4); close: within 1 px and 0.01"
    )


if __name__ == "__main__":
    main()
