"""Rotated NMS speed: ``rsvit.ops.batched_nms_rotated`` against the shapely reference.

    bash scripts/in-env python benchmarks/rotated_nms.py [--sizes 2000 20000] [--repeats 5] [--threads 1]

The boxes imitate raw detector output on a large aerial scene: clusters of ten jittered boxes around
random objects (sizes 8-120 px, any angle, 15 classes) in a 4096 x 4096 image, NMS threshold 0.1 per
class. Both implementations must keep exactly the same boxes; the script checks this before timing.

The reference (``rsvit.ops.reference.nms_rotated_shapely``) is greedy NMS on shapely polygons with an
STRtree to find overlap candidates, i.e. a reasonable CPU implementation rather than an all-pairs
loop. It runs single-threaded, so by default torch does too (``--threads``); absolute times swing with
machine load, the ratio measured in the same run is the figure to compare. If one reference run would
exceed ``--max-reference-seconds`` (estimated from the smaller size), it is timed on a prefix of the
greedy loop and extrapolated by the number of kept boxes; the output says so.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from rsvit.benchmark import median_seconds
from rsvit.ops import batched_nms_rotated
from rsvit.ops.reference import nms_rotated_shapely


def make_detections(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    per_object = 10
    k = math.ceil(n / per_object)
    objects = torch.cat(
        [
            torch.rand(k, 2, generator=g) * 4096,
            torch.exp(torch.rand(k, 2, generator=g) * math.log(15)) * 8,  # 8 .. 120 px
            (torch.rand(k, 1, generator=g) - 0.5) * math.pi,
        ],
        dim=1,
    )
    classes = torch.randint(0, 15, (k,), generator=g)
    boxes = objects.repeat_interleave(per_object, 0)[:n]
    size = boxes[:, 2:4].mean(1, keepdim=True)
    jitter = torch.randn(boxes.shape, generator=g) * torch.cat(
        [size * 0.1] * 4 + [torch.full_like(size, 0.1)], 1
    )
    boxes = boxes + jitter
    boxes[:, 2:4] = boxes[:, 2:4].abs() + 1
    return boxes, torch.rand(n, generator=g), classes.repeat_interleave(per_object)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the reference uses one)")
    parser.add_argument("--iou", type=float, default=0.1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-reference-seconds", type=float, default=60.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"rotated NMS, IoU > {args.iou} per class, device {args.device}, torch threads {args.threads}, "
        f"median of {args.repeats} runs"
    )
    print(
        f"{'boxes':>7} {'kept':>6} {'ours ms':>9} {'ours ops/s':>11} "
        f"{'ref ms':>9} {'ref ops/s':>10} {'speed-up':>9}"
    )
    per_kept_seconds: float | None = None
    for n in args.sizes:
        boxes, scores, classes = make_detections(n)
        dev = (boxes.to(args.device), scores.to(args.device), classes.to(args.device))

        def ours(dev=dev) -> torch.Tensor:
            keep = batched_nms_rotated(*dev, args.iou)
            if keep.is_cuda:
                torch.cuda.synchronize()
            return keep

        keep = ours().cpu().numpy()
        t_ours = median_seconds(ours, args.repeats)

        note = ""
        estimate = None if per_kept_seconds is None else per_kept_seconds * len(keep)
        if estimate is not None and estimate > args.max_reference_seconds:
            prefix = max(1, int(len(keep) * args.max_reference_seconds / estimate / 2))
            start = time.perf_counter()
            partial = nms_rotated_shapely(boxes, scores, args.iou, idxs=classes, max_kept=prefix)
            t_ref = (time.perf_counter() - start) * len(keep) / prefix
            same = np.array_equal(partial, keep[:prefix])
            note = f"  (reference extrapolated from the first {prefix} of {len(keep)} kept boxes)"
        else:
            ref = nms_rotated_shapely(boxes, scores, args.iou, idxs=classes)
            same = np.array_equal(ref, keep)
            reps = max(1, min(args.repeats, 3))
            t_ref = median_seconds(
                lambda b=boxes, s=scores, c=classes: nms_rotated_shapely(b, s, args.iou, idxs=c), reps
            )
        per_kept_seconds = t_ref / max(1, len(keep))
        if not same:
            raise SystemExit(f"MISMATCH: kept boxes differ from the reference for {n} boxes")
        print(
            f"{n:>7} {len(keep):>6} {t_ours * 1e3:>9.1f} {1 / t_ours:>11.2f} {t_ref * 1e3:>9.1f} "
            f"{1 / t_ref:>10.2f} {t_ref / t_ours:>8.1f}x{note}"
        )
    print("kept boxes identical to the reference for every size")


if __name__ == "__main__":
    main()
