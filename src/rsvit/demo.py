"""The quick-start job, offline, on the CPU.

1. describe the backbones and draw one's feature pyramid on a real 4-band scene;
2. train a small segmentation model (ResNet-18 UperNet) on the bundled copy of the Dubai aerial set (CC0);
3. map a held-out Dubai tile (tile 6, never trained on; in domain) with the large-scene engine and measure
   its mIoU against the true labels;
4. map the bundled NAIP scene (US public domain; out of domain: a Dakota prairie, not a desert city) or
   the user's ``--image``: class map (Cloud-Optimized GeoTIFF), polygons (GeoJSON), preview PNG;
5. print the next commands.
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

__all__ = ["add_demo_arguments", "demo_config_path", "feature_pca_image", "run_demo", "sample_image_path"]


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


def _bands(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(b) for b in text.split(",")) if text else None


def run_demo(args: argparse.Namespace) -> int:
    """Runs the demo's steps with the parsed ``rsvit demo`` options; returns the exit code."""
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.image is not None and not args.image.is_file():
        raise FileNotFoundError(f"--image not found: {args.image}")
    if not args.no_table:
        from rsvit.models.catalogue import backbone_table, format_table

        print(format_table(backbone_table()))
        print()
    _feature_pyramid(args)
    if args.backbone_only:
        print(f"\ndemo outputs in {args.out.resolve()}")
        return 0
    run = _train_segmentation(args)
    miou = _map_held_out(args, run)
    scene = _map_scene(args, run)
    print("\n== 5. what the maps show")
    print(
        f"heldout_preview.png: Dubai tile 6, never trained on (in domain): true labels | prediction, "
        f"mIoU {miou:.3f} over six classes after a short CPU training run."
    )
    if args.image is None:
        print(
            "preview.png: the NAIP scene (North Dakota prairie and lakes), out of domain for a model trained "
            "on a desert city: expect a rough map; it shows the large-scene engine and the georeferenced "
            "outputs, not accuracy."
        )
    else:
        print(f"preview.png: your raster {scene} through the Dubai-trained model.")
    produced = (
        "features.png, heldout_map.tif, heldout_preview.png, map.tif, map.geojson, preview.png, training/"
    )
    print(f"\ndemo outputs in {args.out.resolve()}: {produced}")
    _print_next_steps(run)
    return 0


def _print_next_steps(run: Path) -> None:
    model = run / "model.safetensors"
    print("\nnext:")
    print(f"  rsvit predict-raster --model {model} --input YOUR.tif --output map.tif --vector map.geojson")
    print(
        "  rsvit fit --config configs/segmentation/dubai_quick.yaml --data.root /path/to/dubai   # full set"
    )
    print(f"  rsvit export-backbone {run} backbone.safetensors   # the trained backbone, for other tasks")
    print(f"  rsvit export {model} model.onnx   # for deployment: predict-raster runs it on ONNX Runtime")
    print("  rsvit --help; README.md and docs/ for the guides")


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
    weights = f"weights {args.weights.name}" if args.weights is not None else "random weights (untrained)"
    fig.suptitle(f"{args.backbone} feature pyramid, {weights}")
    fig.text(
        0.5,
        -0.02,
        "Each level's features projected on their first 3 principal components: similar colour = similar "
        "features."
        + ("" if args.weights is not None else " Untrained, so colours follow texture and brightness only."),
        ha="center",
        fontsize=8,
    )
    out = args.out / "features.png"
    save_figure(fig, out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}")


def _train_segmentation(args: argparse.Namespace) -> Path:
    from rsvit.cli.lightning import train_from_config

    print("\n== 2. training a segmentation model on the bundled Dubai aerial tiles 1-5")
    overrides = [f"--trainer.logger.init_args.save_dir={args.out / 'training'}"]
    if args.steps is not None:
        overrides.append(f"--trainer.max_steps={args.steps}")
    start = time.perf_counter()
    run = train_from_config(demo_config_path(), overrides)
    print(f"trained in {time.perf_counter() - start:.0f} s: {run / 'model.safetensors'}")
    return run


def _dubai_root() -> Path:
    return demo_config_path().parent / "dubai_mini"


def _write_geotiff(image: np.ndarray, path: Path) -> Path:
    """``image`` (bands, H, W; uint8) as a tiled GeoTIFF, atomically. No CRS: the Dubai set has none."""
    import warnings

    import rasterio
    import rasterio.errors

    from rsvit.utils.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        profile = {"driver": "GTiff", "dtype": "uint8", "count": image.shape[0], "compress": "deflate"}
        with rasterio.open(tmp, "w", height=image.shape[1], width=image.shape[2], **profile) as dst:
            dst.write(image)
    return path


def _palette(run: Path) -> tuple[list[str], list[tuple[int, ...]]]:
    from rsvit.weights import read_metadata

    meta = read_metadata(run / "model.safetensors")
    return list(meta.classes or []), [tuple(int(v) for v in c) for c in meta.extra["palette"]]


def _map_held_out(args: argparse.Namespace, run: Path) -> float:
    """Maps Dubai tile 6 (validation, never trained on) and returns its mIoU against the true mask."""
    import warnings

    import rasterio

    from rsvit.data.segmentation import DubaiDataset
    from rsvit.inference import predict_raster
    from rsvit.metrics.segmentation import confusion_metrics
    from rsvit.viz.segmentation import segmentation_figure

    print("\n== 3. mapping a held-out Dubai tile (in domain) with the large-scene engine")
    sample = DubaiDataset(_dubai_root(), tiles=[6])[0]
    image = (sample["image"].numpy() * 255).round().astype(np.uint8)
    scene = _write_geotiff(image, args.out / "heldout_dubai_tile6.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CRS on purpose: the Dubai set carries no coordinates
        report = predict_raster(
            run,
            scene,
            args.out / "heldout_map.tif",
            window=256,
            overlap=64,
            progress=False,
            overwrite=True,  # the demo's own folder: a rerun replaces its maps
        )
    with rasterio.open(report.output) as src:
        prediction = src.read(1).astype(np.int64)
    truth = sample["mask"].numpy()
    classes, palette = _palette(run)
    n = len(classes)
    valid = (truth < n) & (prediction < n)
    confusion = torch.bincount(
        torch.from_numpy(truth[valid] * n + prediction[valid]), minlength=n * n
    ).reshape(n, n)
    miou = float(confusion_metrics(confusion)["mIoU"])
    name = Path(sample["path"])
    print(f"{name.parent.parent.name}/{name.name}: mIoU {miou:.3f} against its labels -> {report.output}")
    fig = segmentation_figure(
        image.transpose(1, 2, 0).astype(np.float32) / 255,
        classes,
        palette,
        mask=truth,
        prediction=np.where(prediction >= n, 0, prediction),
        title=f"held-out Dubai tile 6 (in domain): true labels | prediction, mIoU {miou:.2f}",
    )
    save_figure(fig, args.out / "heldout_preview.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {args.out / 'heldout_preview.png'}")
    return miou


def _map_scene(args: argparse.Namespace, run: Path) -> Path:
    """Maps the bundled NAIP scene (out of domain) or the user's ``--image``; returns the scene path."""
    import rasterio

    from rsvit.inference import predict_raster
    from rsvit.viz.segmentation import segmentation_figure

    scene = args.image or sample_image_path()
    bands = _bands(args.bands) or (1, 2, 3)
    where = "your raster" if args.image is not None else "the NAIP scene (out of domain)"
    print(f"\n== 4. mapping {where} with the large-scene engine")
    with rasterio.open(scene) as src:
        georeferenced = src.crs is not None
    report = predict_raster(
        run,
        scene,
        args.out / "map.tif",
        bands=bands,
        window=256,
        overlap=64,
        vector=args.out / "map.geojson" if georeferenced else None,
        vector_crs="EPSG:4326",
        overwrite=True,
    )
    print(report.summary())
    if not georeferenced:
        print(f"{scene} has no CRS: no map.geojson written")

    classes, palette = _palette(run)
    with rasterio.open(scene) as src:
        rgb = src.read(list(bands[:3]) if len(bands) >= 3 else [bands[0]] * 3)
    with rasterio.open(report.output) as dst:
        predicted = dst.read(1)
    title = (
        "bundled NAIP scene (North Dakota; out of domain for a Dubai-trained model: expect a rough map)"
        if args.image is None
        else f"{scene.name} through the Dubai-trained demo model"
    )
    fig = segmentation_figure(
        _display_rgb(rgb.astype(np.float32)),
        classes,
        palette,
        prediction=np.where(predicted >= len(classes), 0, predicted),
        title=title,
    )
    save_figure(fig, args.out / "preview.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {args.out / 'preview.png'}")
    return scene
