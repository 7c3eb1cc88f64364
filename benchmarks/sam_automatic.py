"""Automatic mask generation: the official ``segment-anything`` package against rsvit, same weights, one run.

    bash scripts/in-env pip install segment-anything==1.0     # benchmark-only dependency, pure Python
    bash scripts/in-env python benchmarks/sam_automatic.py [--size 512] [--points-per-side 12] [--rounds 3]

No checkpoint can be downloaded here, so both run a ``vit_b``-sized model with seeded random weights: the
official model is built and randomised, and its state dict is loaded strictly into ours through the key
converter (:func:`rsvit.models.promptable.convert_official_sam_state_dict`). The image is a crop of the real
NAIP scene in ``shared/data`` (bands 1-3). Random weights give texture-like, image-wide masks, so the
filters are loosened and the box NMS switched off (as in the reference fixture's run B; NMS still orders
the records) to keep many records to compare.

Rounds are interleaved (official, ours fp32, ours bf16, order alternating per round) so a drift of the
machine's speed hits every row alike; the figures are medians with [min, max] over rounds. Masks are
matched record to record (greedy, best IoU first): the acceptance is matched IoU >= 0.99 for >= 99% of the
official masks. ``--profile`` splits one call of each implementation into image encoder, mask decoder,
mask upscaling and the rest (filters, NMS, encodings, pasting).

The speed-up is the ratio of the medians; the per-round ratios (official / ours in the same round) show how
much the machine's load moved during the run. The default (512x512 crop, 12x12 grid in batches of 48,
3 rounds) is sized for about 10 minutes on 2 cores shared with other work (about 4 on 2 idle cores); the
official default grid (32x32) multiplies the decoder's share without changing the comparison.
``min_mask_region_area`` stays 0: the official clean-up needs OpenCV, which rsvit does not install.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from rsvit.models.promptable import SamAutomaticMaskGenerator, build_sam, convert_official_sam_state_dict

NAIP = Path(__file__).resolve().parents[1] / "../shared/data/geotiff/naip/m_4709963_se_14_1_20200831.tif"
AMG_SETTINGS = dict(
    pred_iou_thresh=0.0,
    stability_score_thresh=0.2,
    stability_score_offset=1.0,
    box_nms_thresh=1.0,
    crop_n_layers=0,
)


def read_crop(path: Path, size: int) -> np.ndarray:
    """A ``size x size`` RGB uint8 crop from the centre of the scene (the scene is 934 x 723)."""
    with rasterio.open(path) as src:
        if size > min(src.width, src.height):
            raise SystemExit(f"--size {size} is larger than the scene ({src.width} x {src.height})")
        col, row = (src.width - size) // 2, (src.height - size) // 2
        data = src.read((1, 2, 3), window=Window(col, row, size, size))
    return np.ascontiguousarray(data.transpose(1, 2, 0))


def official_model(seed: int, small: bool = False) -> torch.nn.Module:
    """The official vit_b with seeded random weights (biases and positions drawn too, not left at zero)."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    if small:  # a quick smoke run of the script itself
        model = _build_sam(64, 2, 2, [1], checkpoint=None)
    else:
        model = _build_sam(768, 12, 12, [2, 5, 8, 11], checkpoint=None)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
            elif name.endswith("pos_embed"):
                param.normal_(0.0, 0.25)
            elif name.endswith(("rel_pos_h", "rel_pos_w")):
                param.normal_(0.0, 0.1)
        # Default initialisation leaves the mask logits at |x| ~ 0.1, where a stability offset of 1 keeps
        # nothing; scaling the hypernetworks' last layers brings them to SAM's usual range of a few units.
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(50.0)
    return model.eval()


def match_masks(ours: list[dict], theirs: list[dict]) -> np.ndarray:
    """Matched IoU of every official mask (greedy one-to-one matching, best pairs first)."""
    if not theirs:
        return np.zeros(0)
    if not ours:
        return np.zeros(len(theirs))
    a = torch.from_numpy(np.stack([r["segmentation"] for r in theirs]).reshape(len(theirs), -1)).float()
    b = torch.from_numpy(np.stack([r["segmentation"] for r in ours]).reshape(len(ours), -1)).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    iou = (inter / union.clamp(min=1)).numpy()
    matched = np.zeros(len(theirs))
    used_a, used_b = set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if i in used_a or j in used_b:
            continue
        matched[i] = iou[i, j]
        used_a.add(i)
        used_b.add(j)
    return matched


class StageTimer:
    """Seconds spent in the image encoder, mask decoder and mask upscaling of a SAM-like model."""

    STAGES = ("image_encoder", "mask_decoder", "postprocess_masks")

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        for stage in self.STAGES:
            target = getattr(model, stage)
            fn = target.forward if isinstance(target, torch.nn.Module) else target
            wrapped = self._timed(stage, fn)
            if isinstance(target, torch.nn.Module):
                target.forward = wrapped
            else:
                setattr(model, stage, wrapped)

    def _timed(self, stage: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds[stage] += time.perf_counter() - start
            return out

        return run

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, default=NAIP.resolve())
    parser.add_argument("--size", type=int, default=512, help="side of the centre crop of the scene")
    parser.add_argument("--points-per-side", type=int, default=12)
    parser.add_argument("--points-per-batch", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-encoder row")
    parser.add_argument("--profile", action="store_true", help="time the stages of one call of each")
    parser.add_argument("--smoke", action="store_true", help="a 2-block, 64-wide encoder (checks the script)")
    args = parser.parse_args()
    try:
        from segment_anything import SamAutomaticMaskGenerator as OfficialGenerator
    except ImportError:
        raise SystemExit("the official package is missing: pip install segment-anything==1.0") from None
    torch.set_num_threads(args.threads)
    image = read_crop(args.image, args.size)

    theirs_model = official_model(args.seed, small=args.smoke)
    if args.smoke:
        ours_model = build_sam(
            "vit_b",
            encoder_embed_dim=64,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_global_attn_indexes=(1,),
        )
    else:
        ours_model = build_sam("vit_b")
    ours_model.load_state_dict(convert_official_sam_state_dict(theirs_model.state_dict()), strict=True)
    settings = dict(
        AMG_SETTINGS, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch
    )
    runners = {
        "official fp32": OfficialGenerator(theirs_model, **settings),
        "rsvit fp32": SamAutomaticMaskGenerator(ours_model, **settings),
    }
    if not args.no_bf16:
        runners["rsvit bf16"] = SamAutomaticMaskGenerator(
            ours_model, encoder_dtype=torch.bfloat16, **settings
        )
    print(
        f"image {args.size}x{args.size} NAIP crop, vit_b random weights (seed {args.seed}), "
        f"{args.points_per_side}^2 points, batch {args.points_per_batch}, {args.threads} threads, "
        f"{args.rounds} rounds"
    )

    outputs: dict[str, list[dict]] = {}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            start = time.perf_counter()
            with torch.inference_mode():
                outputs[name] = runners[name].generate(image)
            times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f}s" for n in runners), flush=True)

    base = statistics.median(times["official fp32"])
    print(
        f"\n{'run':<15}{'median s':>10}{'range s':>18}{'speed-up':>10}{'per-round speed-ups':>24}"
        f"{'records':>9}{'IoU>=0.99':>11}"
    )
    for name, ts in times.items():
        matched = match_masks(outputs[name], outputs["official fp32"])
        share = float((matched >= 0.99).mean()) if matched.size else float("nan")
        per_round = [o / t for o, t in zip(times["official fp32"], ts, strict=True)]
        print(
            f"{name:<15}{statistics.median(ts):>10.2f}{f'[{min(ts):.2f}, {max(ts):.2f}]':>18}"
            f"{base / statistics.median(ts):>9.2f}x{' '.join(f'{r:.2f}' for r in per_round):>24}"
            f"{len(outputs[name]):>9}{share:>10.1%}"
        )
    matched = match_masks(outputs["rsvit fp32"], outputs["official fp32"])
    ok = matched.size > 0 and (matched >= 0.99).mean() >= 0.99
    ratio = base / statistics.median(times["rsvit fp32"])
    print(
        f"\nsame masks (fp32): {'yes' if ok else 'NO'} "
        f"({int((matched >= 0.99).sum())}/{matched.size} matched "
        f"at IoU >= 0.99, min {matched.min() if matched.size else float('nan'):.4f}); "
        f"speed-up {ratio:.2f}x (goal >= 1.5x)"
    )

    if args.profile:
        print("\nwhere the time goes (one call each, seconds):")
        models = {"official fp32": theirs_model, "rsvit fp32": ours_model}
        if "rsvit bf16" in runners:
            models["rsvit bf16"] = runners["rsvit bf16"].predictor.model
        timers: dict[str, StageTimer] = {}
        for name in runners:
            model = models[name]
            timer = timers.get(id(model)) or StageTimer(model)
            timers[id(model)] = timer
            timer.reset()
            start = time.perf_counter()
            with torch.inference_mode():
                runners[name].generate(image)
            total = time.perf_counter() - start
            parts = timer.seconds
            rest = total - sum(parts.values())
            print(
                f"  {name:<15} total {total:6.2f} | "
                + " | ".join(f"{k} {v:6.2f}" for k, v in parts.items())
                + f" | rest {rest:6.2f}"
            )


if __name__ == "__main__":
    main()
