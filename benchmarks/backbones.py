"""Backbone throughput on this machine: forward and training step, fp32 and bf16 autocast.

    bash scripts/in-env python benchmarks/backbones.py [--batch-size 8] [--rounds 3] [--models ...]

Absolute img/s swing with machine load; the ratios to swin_tiny, measured in the same run, are the
figures to compare. Targets for ViTAEv2-S are stated relative to swin_tiny using the reference
measurements of the original ViTAEv2 code on this kind of machine (forward 7.5 img/s fp32 and training
2.1 img/s, against 8.8 and 3.07 img/s for swin_tiny).

``--original DIR`` measures the official RSP implementation itself in the same run, so the targets can be
checked against it directly (forward and training >= 1.3x the original in fp32, bf16 forward >= 2.5x the
original's fp32 forward). DIR is the folder that holds its ``ViTAE_Window_NoShift`` package (in the RSP
repository: ``Scene Recognition/models``); it is imported from there, never copied, and the model is
built with the published ViTAEv2-S settings (checked by its parameter count, 18,870,203 with the
51-class head).

Rows ``swin_t+fused`` and ``vit_b+fused`` are the timm models as ``rsvit.models.create_backbone`` builds
them (linear layers on oneDNN, see ``rsvit.models.backbones.fused_linear``); the baseline of every
ratio stays plain timm ``swin_t``. The timing itself is ``rsvit.benchmark`` (also ``rsvit benchmark``,
which times the models as rsvit builds them); this script adds the plain timm baseline, the original
code and the ViTAEv2-S targets.
"""

from __future__ import annotations

import argparse

import timm
import torch
from torch import nn

import rsvit.models  # noqa: F401  (registers vitaev2_s with timm)
from rsvit.benchmark import add_benchmark_arguments, configure_torch, measure_with_args
from rsvit.models.backbones.factory import BACKBONE_ALIASES
from rsvit.models.backbones.fused_linear import fuse_linear_layers

ORIGINAL = "original"  # row name of the official implementation (--original)
# ViTAEv2-S as the RSP scene-recognition code builds it (ViTAE_Window_NoShift_12_basic_stages4_14).
ORIGINAL_VITAEV2_S_KWARGS = {
    "RC_tokens_type": ["swin", "swin", "transformer", "transformer"],
    "NC_tokens_type": ["swin", "swin", "transformer", "transformer"],
    "stages": 4,
    "embed_dims": [64, 64, 128, 256],
    "token_dims": [64, 128, 256, 512],
    "downsample_ratios": [4, 2, 2, 2],
    "NC_depth": [2, 2, 8, 2],
    "NC_heads": [1, 2, 4, 8],
    "RC_heads": [1, 1, 2, 4],
    "mlp_ratio": 4.0,
    "NC_group": [1, 32, 64, 128],
    "RC_group": [1, 16, 32, 64],
    "img_size": 224,
    "window_size": 7,
    "num_classes": 51,
}
ORIGINAL_VITAEV2_S_PARAMS = 18_870_203

ORIGINAL_VITAE_FWD = 7.5 / 8.8  # original ViTAEv2-S fp32 forward / swin_tiny fp32 forward
ORIGINAL_VITAE_TRAIN = 2.1 / 3.07  # original ViTAEv2-S training / swin_tiny training
TARGETS = {
    "fwd fp32": 1.1,  # >= 1.1x swin_tiny
    "train fp32": 1.3 * ORIGINAL_VITAE_TRAIN,  # >= 1.3x the original
    "fwd bf16": 2.5 * ORIGINAL_VITAE_FWD,  # >= 2.5x the original fp32, in swin_tiny fp32 units
}


def original_vitaev2_s(code_dir: str) -> torch.nn.Module:
    """The official ViTAEv2-S classification model, imported from a checkout of the RSP code."""
    import importlib
    import sys
    from pathlib import Path

    package = Path(code_dir) / "ViTAE_Window_NoShift"
    if not (package / "base_model.py").is_file():
        raise SystemExit(
            f"--original {code_dir}: no ViTAE_Window_NoShift/base_model.py there; pass the folder that "
            "holds the package (in the RSP repository: 'Scene Recognition/models')"
        )
    sys.path.insert(0, str(Path(code_dir).resolve()))
    try:
        base_model = importlib.import_module("ViTAE_Window_NoShift.base_model")
    except ImportError as err:
        raise SystemExit(f"--original {code_dir}: the official code does not import here: {err}") from err
    model = base_model.ViTAE_Window_NoShift_basic(**ORIGINAL_VITAEV2_S_KWARGS)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != ORIGINAL_VITAEV2_S_PARAMS:
        raise SystemExit(
            f"--original {code_dir}: built {n_params:,} parameters, expected {ORIGINAL_VITAEV2_S_PARAMS:,} "
            "for ViTAEv2-S; is this the RSP ViTAE_Window_NoShift code?"
        )
    return model


def build(name: str, original_dir: str | None = None) -> nn.Module:
    """A 51-class timm model; ``name+fused`` with rsvit's oneDNN linear layers (as ``create_backbone``
    builds it); ``original``: the official ViTAEv2-S code found in ``original_dir``."""
    if name == ORIGINAL:
        return original_vitaev2_s(original_dir)
    base, _, variant = name.partition("+")
    model = timm.create_model(BACKBONE_ALIASES.get(base, base), num_classes=51)
    if variant == "fused":
        fuse_linear_layers(model)
    elif variant:
        raise SystemExit(f"unknown model variant {variant!r} in {name!r}; only '+fused' exists")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Model names may end in '+fused' (rsvit's oneDNN linear layers on the timm model); plain "
        "timm swin_t is always the baseline, as the targets are stated against it.",
    )
    add_benchmark_arguments(parser)
    parser.set_defaults(models=["swin_t", "vitaev2_s", "resnet50", "vit_b", "swin_t+fused", "vit_b+fused"])
    parser.add_argument(
        "--original",
        metavar="DIR",
        help="also time the official ViTAEv2-S code found in DIR (the folder holding its "
        "ViTAE_Window_NoShift package) and check the targets against it",
    )
    args = parser.parse_args()
    if args.baseline not in (None, "swin_t"):
        parser.error("the baseline here is always plain timm swin_t (the targets are stated against it)")
    configure_torch(args)
    models = ["swin_t", *[m for m in args.models if m not in ("swin_t", ORIGINAL)]]
    if args.original:
        models.append(ORIGINAL)
    print(
        f"batch {args.batch_size}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
        f"channels_last={args.channels_last}, flush denormals={not args.keep_denormals}, "
        f"torch {torch.__version__}"
    )
    result = measure_with_args(
        {m: (lambda m=m: build(m, args.original)) for m in models},
        "swin_t",
        args,
        progress=None if args.quiet else (lambda line: print(f"  {line}", flush=True)),
    )
    print("\n" + result.table())
    if "vitaev2_s" in result.rates and set(TARGETS) <= set(args.jobs):
        print("\nViTAEv2-S targets (ratio to swin_t fp32 in this run, median over rounds):")
        checks = {
            "fwd fp32": result.ratio("vitaev2_s", "fwd fp32"),
            "train fp32": result.ratio("vitaev2_s", "train fp32"),
            "fwd bf16": result.ratio("vitaev2_s", "fwd bf16", "fwd fp32"),
        }
        for key, value in checks.items():
            verdict = "met" if value >= TARGETS[key] else "NOT met"
            print(f"  {key:<11} {value:5.2f}x  (target >= {TARGETS[key]:.2f}x)  {verdict}")
        print(
            "  vs the original code's reference figures: "
            f"fwd fp32 {checks['fwd fp32'] / ORIGINAL_VITAE_FWD:.2f}x, "
            f"train fp32 {checks['train fp32'] / ORIGINAL_VITAE_TRAIN:.2f}x, "
            f"fwd bf16 {checks['fwd bf16'] / ORIGINAL_VITAE_FWD:.2f}x"
        )
    if ORIGINAL in result.rates and "vitaev2_s" in result.rates and set(TARGETS) <= set(args.jobs):
        print(
            "\nViTAEv2-S against the original code measured in this run (median of per-round ratios); "
            f"the original ran at {result.ratio(ORIGINAL, 'fwd fp32'):.2f}x swin_t forward, "
            f"{result.ratio(ORIGINAL, 'train fp32'):.2f}x training:"
        )
        direct = {
            "fwd fp32": (result.ratio("vitaev2_s", "fwd fp32", base=ORIGINAL), 1.3),
            "train fp32": (result.ratio("vitaev2_s", "train fp32", base=ORIGINAL), 1.3),
            "fwd bf16": (result.ratio("vitaev2_s", "fwd bf16", "fwd fp32", base=ORIGINAL), 2.5),
        }
        for key, (value, target) in direct.items():
            verdict = "met" if value >= target else "NOT met"
            print(f"  {key:<11} {value:5.2f}x  (target >= {target:.1f}x the original fp32)  {verdict}")


if __name__ == "__main__":
    main()
