"""Oriented R-CNN forward speed on a 1024 x 1024 DOTA patch, against torchvision's Faster R-CNN.

    bash scripts/in-env python benchmarks/detection.py [--rounds 3] [--threads 2]
        [--backbones resnet50 vitaev2_s] [--dtypes fp32 bf16]

Input: DOTA P0706 (``shared/data/dota-samples`` beside the checkout or under ``RSVIT_SHARED``, or
``--image``) cropped / zero-padded to
1024 x 1024 and normalised. Models: rsvit Oriented R-CNN with ResNet-50 and ViTAEv2-S backbones
(random seeded weights, 15 classes, the official test settings: 2000 proposals per level before and
2000 after the proposal NMS, score threshold 0.05, rotated NMS 0.1, at most 2000 detections) and
torchvision's ``fasterrcnn_resnet50_fpn`` (no weights, 16 outputs = 15 classes + background, its own
test settings, ``min_size = max_size = 1024`` so that it runs at 1024 too), each in fp32 and under
bf16 autocast, all in eval mode and in the same process.

Rounds are interleaved (every model once per round) and the table shows the median and the range
over the rounds after one warm-up round. With random heads every class scores about 1/16 > 0.05, so
the detection NMS of both detectors sees nearly every (proposal, class) pair: a worst case for the
NMS stage. Our time is split into stages (backbone / FPN / RPN head / proposals = decode + HBB NMS /
RoI pooling / box head / detection NMS) by running them one after the other; the split run is
checked against ``model(images)``. Absolute times swing with machine load: compare the ratios of
one run. Cost: about 80 s per round on two idle cores (seven forwards), so the default (3 rounds,
a warm-up round and the split check) stays under ~7 minutes; on a shared machine use ``--rounds 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from rsvit.models.detection import OrientedRCNN, build_oriented_rcnn

SHARED = Path(os.environ.get("RSVIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_IMAGE = SHARED / "data" / "dota-samples" / "images" / "P0706.png"
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
STAGES = ("backbone", "fpn", "rpn_head", "proposals", "roi_pool", "box_head", "det_nms")


def load_patch(path: Path, size: int = 1024) -> torch.Tensor:
    """``(1, 3, size, size)`` float image in [0, 255]: the top-left crop, zero-padded where smaller."""
    image = np.asarray(Image.open(path).convert("RGB"))[:size, :size]
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()
    return F.pad(x, (0, size - x.shape[3], 0, size - x.shape[2]))


def staged_forward(model: OrientedRCNN, images: torch.Tensor, times: dict[str, float]) -> list[dict]:
    """``model(images)`` run stage by stage, adding each stage's seconds to ``times``."""

    def tick(name: str, start: float) -> float:
        now = time.perf_counter()
        times[name] = times.get(name, 0.0) + now - start
        return now

    t = time.perf_counter()
    feats = model.backbone(images)
    if model.backbone_norms is not None:
        feats = [
            n(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            for n, f in zip(model.backbone_norms, feats, strict=True)
        ]
    t = tick("backbone", t)
    feats = model.neck(feats)
    t = tick("fpn", t)
    logits, deltas = model.rpn_head(feats)
    t = tick("rpn_head", t)
    anchors = model.anchors_for(feats)
    props = [model.rpn_head.proposals_single(logits, deltas, anchors, i)[0] for i in range(images.shape[0])]
    t = tick("proposals", t)
    rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], dim=1) for i, p in enumerate(props)])
    pooled = model.roi_extractor(feats, rois)
    t = tick("roi_pool", t)
    cls, reg = model.bbox_head(pooled)
    t = tick("box_head", t)
    out = model.detections(props, cls, reg, tuple(images.shape[-2:]))
    tick("det_nms", t)
    return out


def ours(backbone: str, seed: int = 0) -> OrientedRCNN:
    torch.manual_seed(seed)
    return build_oriented_rcnn(backbone, num_classes=15).eval()


def torchvision_frcnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=16, min_size=1024, max_size=1024
    ).eval()


def autocast(dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "vitaev2_s"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true", help="channels-last backbone and input")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = load_patch(args.image)
    normed = (raw - MEAN) / STD
    tv_input = [raw[0] / 255.0]  # torchvision normalises itself
    models: dict[str, torch.nn.Module] = {f"ours-{b}": ours(b) for b in args.backbones}
    models["torchvision-frcnn-r50"] = torchvision_frcnn()
    if args.channels_last:
        for m in models.values():
            m.to(memory_format=torch.channels_last)
        normed = normed.contiguous(memory_format=torch.channels_last)

    runs: list[tuple[str, str, Callable[[dict[str, float]], list[dict]]]] = []
    for name, model in models.items():
        for dtype in args.dtypes:
            if name.startswith("ours"):
                runs.append((name, dtype, lambda tm, m=model: staged_forward(m, normed, tm)))
            else:
                runs.append((name, dtype, lambda tm, m=model: m(tv_input)))

    with torch.inference_mode():
        for name, model in models.items():  # the split run must be the model's own forward
            if name.startswith("ours"):
                ref, split = model(normed)[0], staged_forward(model, normed, {})[0]
                assert all(torch.equal(ref[k], split[k]) for k in ref), name
        totals: dict[tuple[str, str], list[float]] = {(n, d): [] for n, d, _ in runs}
        stages: dict[tuple[str, str], list[dict[str, float]]] = {(n, d): [] for n, d, _ in runs}
        counts: dict[tuple[str, str], int] = {}
        for r in range(args.rounds + 1):
            for name, dtype, fn in runs:
                tm: dict[str, float] = {}
                with autocast(dtype):
                    start = time.perf_counter()
                    out = fn(tm)
                    elapsed = time.perf_counter() - start
                counts[(name, dtype)] = int(out[0]["scores"].numel())
                split = " ".join(f"{k}={v:.3f}" for k, v in tm.items())
                print(f"  round {r} {name} {dtype}: {elapsed:.3f} s {split}", flush=True)
                if r > 0:
                    totals[(name, dtype)].append(elapsed)
                    stages[(name, dtype)].append(tm)
            print(f"round {r} done", flush=True)

    print(f"\n1024x1024 P0706 patch, batch 1, {args.threads} threads, {args.rounds} rounds (+1 warm-up)")
    print(f"{'model':24s} {'dtype':5s} {'median s':>9s} {'range s':>15s} {'vs tv':>6s} {'dets':>5s}")
    for name, dtype, _ in runs:
        t = totals[(name, dtype)]
        tv = statistics.median(totals[("torchvision-frcnn-r50", dtype)])
        med = statistics.median(t)
        print(
            f"{name:24s} {dtype:5s} {med:9.3f} {min(t):7.3f}-{max(t):<7.3f} {med / tv:6.2f} "
            f"{counts[(name, dtype)]:5d}"
        )
    print("\nstage split of ours (median s over the rounds)")
    print(f"{'model':24s} {'dtype':5s} " + " ".join(f"{s:>9s}" for s in STAGES))
    for name, dtype, _ in runs:
        if name.startswith("ours"):
            med = [statistics.median(tm[s] for tm in stages[(name, dtype)]) for s in STAGES]
            print(f"{name:24s} {dtype:5s} " + " ".join(f"{m:9.3f}" for m in med))


if __name__ == "__main__":
    main()
