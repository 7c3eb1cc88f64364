"""The quick-start job, offline and on two CPU cores in a few minutes.

1. describe the backbones and draw the feature pyramid of one on a real 4-band scene;
2. train a small segmentation model on the bundled copy of the Dubai aerial set (CC0);
3. run it over the bundled georeferenced NAIP scene (US public domain) with the large-scene engine;
4. write the class map (Cloud-Optimized GeoTIFF), its polygons (GeoJSON) and a preview PNG.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from rsvit.cli.demo_args import add_demo_arguments
from rsvit.utils.atomic import save_figure

__all__ = ["add_demo_arguments", "feature_pca_image", "run_demo", "sample_image_path"]


def sample_image_path() -> Path:
    """The bundled 640x512 NAIP crop (red, green, blue, near infrared; uint8; 5 m; EPSG:26914)."""
    return Path(str(resources.files("rsvit") / "assets" / "naip_2020_sample.tif"))


def demo_config_path() -> Path:
    """The segmentation config the demo trains (ResNet-18 UperNet on the bundled Dubai copy)."""
    return Path(str(resources.files("rsvit") / "assets" / "dubai_demo.yaml"))


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


def run_demo(args: argparse.Namespace) -> int:
    if not args.no_table:
        from rsvit.models.catalogue import backbone_table, format_table

        print(format_table(backbone_table()))
        print()
    _feature_pyramid(args)
    if args.backbone_only:
        print(f"\ndemo outputs in {args.out.resolve()}")
        return 0
    run = _train_segmentation(args)
    _map_scene(args, run)
    produced = "features.png, map.tif, map.geojson, preview.png, training/"
    print(f"\ndemo outputs in {args.out.resolve()}: {produced}")
    return 0


def _feature_pyramid(args: argparse.Namespace) -> None:
    from rsvit.data.io import read_image, to_unit_range
    from rsvit.models import create_backbone

    print("== 1. a backbone on a real scene")
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
    save_figure(fig, out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}")


def _train_segmentation(args: argparse.Namespace) -> Path:
    from rsvit.cli.lightning import train_from_config

    print("\n== 2. training a segmentation model on the bundled Dubai aerial tiles")
    overrides = [f"--trainer.logger.init_args.save_dir={args.out / 'training'}"]
    if args.steps is not None:
        overrides.append(f"--trainer.max_steps={args.steps}")
    start = time.perf_counter()
    run = train_from_config(demo_config_path(), overrides)
    print(f"trained in {time.perf_counter() - start:.0f} s: {run / 'model.safetensors'}")
    return run


def _map_scene(args: argparse.Namespace, run: Path) -> None:
    import rasterio

    from rsvit.inference import predict_raster
    from rsvit.viz.segmentation import segmentation_figure
    from rsvit.weights import read_metadata

    print("\n== 3. mapping a georeferenced scene with the large-scene engine")
    scene = sample_image_path()
    report = predict_raster(
        run,
        scene,
        args.out / "map.tif",
        bands=(1, 2, 3),
        window=256,
        overlap=64,
        vector=args.out / "map.geojson",
        vector_crs="EPSG:4326",
    )
    print(report.summary())

    meta = read_metadata(run / "model.safetensors")
    palette = [tuple(int(v) for v in c) for c in meta.extra["palette"]]
    with rasterio.open(scene) as src:
        rgb = src.read((1, 2, 3))
    with rasterio.open(report.output) as dst:
        classes = dst.read(1)
    fig = segmentation_figure(
        _display_rgb(rgb.astype(np.float32)),
        list(meta.classes or []),
        palette,
        prediction=np.where(classes == 255, 0, classes),
        title="bundled NAIP scene through the demo model (trained on Dubai tiles; expect a rough map)",
    )
    save_figure(fig, args.out / "preview.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {args.out / 'preview.png'}")
