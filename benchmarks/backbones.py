"""Backbone throughput on this machine: forward and training step, fp32 and bf16 autocast.

    bash scripts/in-env python benchmarks/backbones.py [--batch-size 8] [--rounds 3] [--models ...]

Absolute img/s swing with machine load; the ratios to swin_tiny, measured in the same run, are the
figures to compare. Targets for ViTAEv2-S are stated relative to swin_tiny using the reference
measurements of the original ViTAEv2 code on this kind of machine (forward 7.5 img/s fp32 and training
2.1 img/s, against 8.8 and 3.07 img/s for swin_tiny).

Rows ``swin_t+fused`` and ``vit_b+fused`` are the timm models as ``rsvit.models.create_backbone`` builds
them (linear layers on oneDNN, see ``rsvit.models.backbones.fused_linear``); the baseline of every
ratio stays plain timm ``swin_t``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

import rsvit.models  # noqa: F401  (registers vitaev2_s with timm)
from rsvit.models.backbones.factory import BACKBONE_ALIASES
from rsvit.models.backbones.fused_linear import fuse_linear_layers

ORIGINAL_VITAE_FWD = 7.5 / 8.8  # original ViTAEv2-S fp32 forward / swin_tiny fp32 forward
ORIGINAL_VITAE_TRAIN = 2.1 / 3.07  # original ViTAEv2-S training / swin_tiny training
TARGETS = {
    "fwd fp32": 1.1,  # >= 1.1x swin_tiny
    "train fp32": 1.3 * ORIGINAL_VITAE_TRAIN,  # >= 1.3x the original
    "fwd bf16": 2.5 * ORIGINAL_VITAE_FWD,  # >= 2.5x the original fp32, in swin_tiny fp32 units
}


def _timed(fn, iters: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive creation)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def workloads(name: str, batch: int, size: int, channels_last: bool) -> dict[str, Callable[[], None]]:
    """The four timed jobs of one backbone: forward and training step, fp32 and bf16 autocast.

    ``name+fused`` is the timm model with its linear layers on oneDNN, as ``create_backbone`` builds it.
    """
    import timm

    base, _, variant = name.partition("+")
    model = timm.create_model(BACKBONE_ALIASES.get(base, base), num_classes=51)
    if variant == "fused":
        fuse_linear_layers(model)
    elif variant:
        raise SystemExit(f"unknown model variant {variant!r} in {name!r}; only '+fused' exists")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 51, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    jobs: dict[str, Callable[[], None]] = {}
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

        def forward(ctx=ctx):
            model.eval()
            with torch.inference_mode(), ctx():
                model(x)

        def step(ctx=ctx):
            model.train()
            with ctx():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        jobs[f"fwd {precision}"] = forward
        jobs[f"train {precision}"] = step
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per job and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all models")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--models",
        nargs="+",
        default=["swin_t", "vitaev2_s", "resnet50", "vit_b", "swin_t+fused", "vit_b+fused"],
        help="timm or rsvit names; 'name+fused' swaps in rsvit's oneDNN linear layers (create_backbone "
        "does this); plain swin_t is the baseline of every ratio",
    )
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    parser.add_argument(
        "--keep-denormals",
        action="store_true",
        help="do not flush denormal floats to zero (by default they are flushed, as CPU inference runtimes "
        "do; tiny activations of randomly initialised networks otherwise slow bf16 kernels down)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)
    models = ["swin_t", *[m for m in args.models if m != "swin_t"]]
    print(
        f"batch {args.batch_size}, {args.size}x{args.size}, {args.threads} threads, "
        f"channels_last={args.channels_last}, flush denormals={not args.keep_denormals}, "
        f"torch {torch.__version__}"
    )
    jobs = {m: workloads(m, args.batch_size, args.size, args.channels_last) for m in models}
    # Rounds interleave the models so that slow drifts of the machine's speed hit all of them alike; the
    # figures are medians over rounds, the ratios medians of the per-round ratios.
    rates: dict[str, dict[str, list[float]]] = {m: {k: [] for k in jobs[m]} for m in models}
    for r in range(args.rounds):
        for name in models:
            for key, job in jobs[name].items():
                iters = args.iters if key.startswith("fwd") else max(2, args.iters // 2)
                rates[name][key].append(args.batch_size / _timed(job, iters))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    results = {m: {k: statistics.median(v) for k, v in rates[m].items()} for m in models}

    def ratio(name: str, key: str, base_key: str) -> float:
        return statistics.median(
            a / b for a, b in zip(rates[name][key], rates["swin_t"][base_key], strict=True)
        )

    cols = ["fwd fp32", "fwd bf16", "train fp32", "train bf16"]
    print(f"\n{'img/s':<12}" + "".join(f"{c:>12}" for c in cols) + "   ratio to swin_t fp32 (fwd, train)")
    for name, res in results.items():
        ratios = f"{ratio(name, 'fwd fp32', 'fwd fp32'):.2f}x, {ratio(name, 'train fp32', 'train fp32'):.2f}x"
        print(f"{name:<12}" + "".join(f"{res[c]:>12.2f}" for c in cols) + f"   {ratios}")
    if "vitaev2_s" in results:
        print("\nViTAEv2-S targets (ratio to swin_t fp32 in this run, median over rounds):")
        checks = {
            "fwd fp32": ratio("vitaev2_s", "fwd fp32", "fwd fp32"),
            "train fp32": ratio("vitaev2_s", "train fp32", "train fp32"),
            "fwd bf16": ratio("vitaev2_s", "fwd bf16", "fwd fp32"),
        }
        for key, value in checks.items():
            verdict = "met" if value >= TARGETS[key] else "NOT met"
            print(f"  {key:<11} {value:5.2f}x  (target >= {TARGETS[key]:.2f}x)  {verdict}")
        print(
            f"  vs the original code: fwd fp32 {checks['fwd fp32'] / ORIGINAL_VITAE_FWD:.2f}x, "
            f"train fp32 {checks['train fp32'] / ORIGINAL_VITAE_TRAIN:.2f}x, "
            f"fwd bf16 {checks['fwd bf16'] / ORIGINAL_VITAE_FWD:.2f}x"
        )


if __name__ == "__main__":
    main()
