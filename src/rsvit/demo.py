"""The quick-start job: describe the backbones, run one on a real image, draw its feature pyramid.

Runs offline on the multispectral NAIP sample shipped with the package (red, green, blue, near
infrared; 5 m; US public domain), or on any image or GeoTIFF given with ``--image``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

__all__ = ["add_demo_arguments", "feature_pca_image", "run_demo", "sample_image_path"]


def sample_image_path() -> Path:
    """The bundled 256x256 NAIP crop (4 bands, uint8, EPSG:26914)."""
    return Path(str(resources.files("rsvit") / "assets" / "naip_2020_sample.tif"))


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, default=None, help="image or GeoTIFF (default: bundled sample)")
    parser.add_argument("--bands", type=str, default=None, help="1-based bands to use, e.g. 1,2,3")
    parser.add_argument("--backbone", default="vitaev2_s", help="backbone name (see `rsvit models`)")
    parser.add_argument(
        "--weights", type=Path, default=None, help="checkpoint to load (any supported format)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--no-table", action="store_true", help="skip the backbone table")


def feature_pca_image(feature: torch.Tensor) -> np.ndarray:
    """Projects a (C, H, W) feature map on its first three principal components, as an RGB image.

    Similar features get similar colours, which shows at a glance what a level responds to.
    """
    c, h, w = feature.shape
    flat = feature.reshape(c, h * w).T.double()
    flat = flat - flat.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    proj = flat @ v[:3].T
    lo, hi = proj.quantile(0.02, dim=0), proj.quantile(0.98, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    return proj.T.reshape(3, h, w).permute(1, 2, 0).float().numpy()


def _display_rgb(image: np.ndarray) -> np.ndarray:
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo, hi = np.percentile(rgb, (2, 98))
    return np.clip((rgb - lo) / max(hi - lo, 1e-12), 0, 1).transpose(1, 2, 0)


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_demo(args: argparse.Namespace) -> int:
    from rsvit.data.image_io import read_image, to_unit_range
    from rsvit.models import create_backbone

    if not args.no_table:
        from rsvit.models.catalogue import backbone_table, format_table

        print(format_table(backbone_table()))
        print()

    path = args.image or sample_image_path()
    bands = [int(b) for b in args.bands.split(",")] if args.bands else None
    image = to_unit_range(read_image(path, bands))
    x = torch.from_numpy(image)
    # Per-band standardisation of the scene itself: no dataset statistics are needed for a look.
    x = (x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    x = x[None]
    print(f"image: {path} ({image.shape[0]} bands, {image.shape[1]}x{image.shape[2]})")

    backbone = create_backbone(args.backbone, in_chans=image.shape[0]).eval()
    if args.weights is not None:
        from rsvit.weights import load_into

        report = load_into(backbone, args.weights)
        print(f"weights: {args.weights} ({report})")
    else:
        print("weights: random initialisation (pass --weights to load a checkpoint)")

    with torch.inference_mode():
        start = time.perf_counter()
        feats = backbone(x)
        elapsed = time.perf_counter() - start
    print(f"{args.backbone}: forward in {elapsed * 1000:.0f} ms")
    for feat, red in zip(feats, backbone.reductions, strict=True):
        print(f"  stride {red:>2}: {tuple(feat.shape)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(feats) + 1, figsize=(3 * (len(feats) + 1), 3.2))
    axes[0].imshow(_display_rgb(image))
    axes[0].set_title("input (first 3 bands)")
    for ax, feat, red in zip(axes[1:], feats, backbone.reductions, strict=True):
        ax.imshow(feature_pca_image(feat[0]), interpolation="nearest")
        ax.set_title(f"stride {red}: {feat.shape[1]} ch, PCA")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{args.backbone} feature pyramid")
    out = args.out / "features.png"
    _save_figure(fig, out)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
