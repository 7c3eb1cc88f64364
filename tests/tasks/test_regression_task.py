"""Height regression in Lightning: HeightDataModule, DenseRegressionTask, HeightReport and the runner."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from rsvit.cli.lightning import build_cli, train_from_config
from rsvit.datamodules.regression import HeightDataModule, find_height_pairs
from rsvit.models.spec import load_model
from rsvit.tasks.regression import DenseRegressionTask, HeightReport, WarmupDecay

REPO = Path(__file__).resolve().parents[2]
NODATA = -9999.0
HOLE = (slice(0, 16), slice(0, 16))  # target nodata block of every synthetic pair
SPEC = {
    "task": "regression",
    "backbone": "resnet18",
    "head_kwargs": {"features": 32, "head_kwargs": {"non_negative": False}},
}


def _write(path: Path, array: np.ndarray, nodata: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[-2],
        width=array.shape[-1],
        count=array.shape[0],
        dtype=array.dtype,
        crs="EPSG:32633",
        transform=Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0),
        nodata=nodata,
    ) as dst:
        dst.write(array)


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sum of a few random low-frequency waves in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = sum(
        np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy) + rng.uniform(0, 6))
        for _ in range(3)
    )
    return ((field - field.min()) / (field.max() - field.min())).astype(np.float32)


def _synthetic_pairs(root: Path, n: int = 3, size: int = 96) -> Path:
    """``root/images`` (3-band uint8) and ``root/targets`` (height = 8 * band 1 + 4 * band 2 + 1 m)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        bands = np.stack([_smooth_field(rng, size) for _ in range(3)])
        height = (8.0 * bands[0] + 4.0 * bands[1] + 1.0).astype(np.float32)
        height[HOLE] = NODATA
        _write(root / "images" / f"tile{i}.tif", (bands * 255).round().astype(np.uint8))
        _write(root / "targets" / f"tile{i}.tif", height[None], nodata=NODATA)
    return root


def _datamodule(root: Path, **kwargs: object) -> HeightDataModule:
    options = {"crop_size": 64, "batch_size": 4, "mean": [0.5] * 3, "std": [0.25] * 3, "train_repeats": 4}
    return HeightDataModule(str(root), **{**options, **kwargs})  # type: ignore[arg-type]


class _LossLog(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread: on a shared 2-core machine oversubscribed threads make each step ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One short fit on synthetic pairs with the L1 loss."""
    torch.manual_seed(0)
    root = _synthetic_pairs(tmp_path_factory.mktemp("pairs"))
    out = tmp_path_factory.mktemp("run")
    data = _datamodule(root, train_repeats=12)  # 9 steps per epoch, validation after the 4th
    task = DenseRegressionTask(
        SPEC, in_chans=3, loss="l1", pixel_size=data.pixel_size, num_plots=2,
        encoder_lr_factor=1.0, schedule="constant", warmup=0,
    )  # fmt: skip
    task.optimizer_factory = lambda params: torch.optim.AdamW(params, lr=2e-3)
    log, report = _LossLog(), HeightReport(monitor="metric/rmse")
    trainer = L.Trainer(
        max_steps=36,
        accelerator="cpu",
        devices=1,
        logger=L.pytorch.loggers.CSVLogger(out, name="height"),
        callbacks=[log, report],
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=4,
        log_every_n_steps=5,
    )
    trainer.fit(task, datamodule=data)
    return {"root": root, "task": task, "log": log, "report": report, "dir": Path(trainer.log_dir)}


def test_training_loss_falls(trained: dict[str, object]) -> None:
    losses = trained["log"].losses  # type: ignore[attr-defined]
    assert len(losses) == 36
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    assert last < 0.6 * first, (first, last)


def test_report_files_and_reload(trained: dict[str, object]) -> None:
    folder: Path = trained["dir"]  # type: ignore[assignment]
    report = json.loads((folder / "metrics.json").read_text())
    assert report["model"] and Path(report["model"]).name == "model.safetensors"
    for protocol in ("relative", "metric"):
        assert set(report["val"][protocol]) >= {"abs_rel", "rmse", "mae", "delta1"}
        assert report["val"][protocol]["rmse"] > 0
    # Least-squares alignment can only lower the RMSE.
    assert report["val"]["relative"]["rmse"] <= report["val"]["metric"]["rmse"] + 1e-9
    assert report["best_val"] is not None and report["history"]
    previews = sorted((folder / "val_predictions").glob("*.png"))
    assert len(previews) == 2 and all(p.stat().st_size > 5000 for p in previews)
    metrics_csv = (folder / "metrics.csv").read_text()
    assert "val/abs_rel" in metrics_csv and "val/metric_rmse" in metrics_csv

    model, spec, meta = load_model(folder / "model.safetensors")
    assert spec.task == "regression" and spec.in_chans == 3
    assert meta.extra["pixel_size"] == pytest.approx(0.5)
    assert list(meta.mean) == [0.5] * 3
    task: DenseRegressionTask = trained["task"]  # type: ignore[assignment]
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), task.model.eval()(x))


@pytest.mark.parametrize("loss", ["ssi", "l1", "berhu"])
def test_nodata_never_influences_loss(tmp_path: Path, loss: str) -> None:
    data = _datamodule(_synthetic_pairs(tmp_path), crop_size=96, hflip=0, vflip=0, rot90=0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert not batch["valid"][:, HOLE[0], HOLE[1]].any()
    assert batch["valid"].float().mean() > 0.9
    task = DenseRegressionTask(SPEC, in_chans=3, loss=loss).eval()

    def loss_and_grads(target: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        task.zero_grad()
        value, _ = task.compute_loss({**batch, "target": target})
        value.backward()
        return value.detach(), [p.grad.clone() for p in task.parameters() if p.grad is not None]

    base, grads = loss_and_grads(batch["target"])
    perturbed = torch.where(batch["valid"], batch["target"], torch.randn_like(batch["target"]) * 1e4)
    moved, moved_grads = loss_and_grads(perturbed)
    torch.testing.assert_close(moved, base)
    for a, b in zip(grads, moved_grads, strict=True):
        torch.testing.assert_close(a, b)
    # Sanity check that the comparison can fail: a change on a valid pixel moves the loss.
    changed = batch["target"].clone()
    changed[:, 40:60, 40:60] += 5.0
    assert not torch.allclose(loss_and_grads(changed)[0], base)


def test_whole_image_validation_masks_nodata(tmp_path: Path) -> None:
    data = _datamodule(_synthetic_pairs(tmp_path, n=2), eval_batch_size=2)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (2, 3, 96, 96)
    expected = torch.ones(96, 96, dtype=torch.bool)
    expected[HOLE] = False
    assert torch.equal(batch["valid"], expected.expand(2, -1, -1))
    assert float(batch["target"][:, HOLE[0], HOLE[1]].abs().max()) == 0.0
    assert len(find_height_pairs(tmp_path)) == 2


def test_config_runs_through_the_runner(tmp_path: Path) -> None:
    root = _synthetic_pairs(tmp_path / "pairs", n=2, size=64)
    folder = train_from_config(
        REPO / "configs/regression/height_quick.yaml",
        [
            f"--data.pairs={root}",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            "--data.train_repeats=2",
        ],
    )
    assert (folder / "model.safetensors").is_file() and (folder / "metrics.json").is_file()
    assert list((folder / "val_predictions").glob("*.png"))
    _, spec, meta = load_model(folder / "model.safetensors")
    assert meta.extra["pixel_size"] == pytest.approx(0.5)  # linked from the data
    assert meta.extra["loss"] == "l1" and spec.head_kwargs["features"] == 32


def test_real_elevation_pair_gives_masked_batches(data_dir: Path, tmp_path: Path) -> None:
    """DSM as a one-band image, height above ground as target, with a nodata hole cut into a copy."""
    elevation = data_dir / "geotiff" / "elevation"
    with rasterio.open(elevation / "hag.tif") as src:
        hag, profile = src.read(1), src.profile
    holed = hag.copy()
    holed[100:140, 50:90] = NODATA
    target = tmp_path / "hag_holed.tif"
    with rasterio.open(target, "w", **{**profile, "nodata": NODATA}) as dst:
        dst.write(holed[None])
    pairs = [[str(elevation / "dsm.tif"), str(target)]]
    data = HeightDataModule(
        pairs, crop_size=128, batch_size=3, in_chans=1, mean=[15.0], std=[5.0], train_repeats=3
    )
    assert data.pixel_size == pytest.approx(2.0)
    data.setup("fit")

    whole = next(iter(data.val_dataloader()))
    assert whole["image"].shape == (1, 1, 259, 283)
    expected = torch.from_numpy(holed != NODATA)
    assert torch.equal(whole["valid"][0], expected)
    torch.testing.assert_close(whole["target"][0][expected], torch.from_numpy(hag)[expected])
    assert float(whole["image"].abs().max()) < 10  # normalised elevations, no nodata sentinels

    torch.manual_seed(1)
    crops = [next(iter(data.train_dataloader())) for _ in range(4)]
    for batch in crops:
        assert batch["image"].shape == (3, 1, 128, 128)
        assert batch["valid"].shape == batch["target"].shape == (3, 128, 128)
        assert float(batch["target"][~batch["valid"]].abs().sum()) == 0.0
        assert float(batch["target"].max()) <= float(hag.max())
    # Some random crop hits the hole and some pixel in it is masked.
    assert any((~b["valid"]).any() for b in crops)


# ------------------------------------------------------------------------------------------------
# Learning-rate groups and schedule
# ------------------------------------------------------------------------------------------------


class _LrLog(L.Callback):
    """Learning rate of every parameter group as used by each optimiser step."""

    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})


def test_default_groups_follow_the_paper_rates() -> None:
    """Adam(W) lr 1e-4 for the decoder and 1e-5 for the encoder (DPT paper), covering every parameter once."""
    task = DenseRegressionTask(SPEC, in_chans=3, schedule="constant", warmup=0)
    optimizer = task.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"encoder", "decoder"}
    assert groups["decoder"]["lr"] == pytest.approx(1e-4) and groups["encoder"]["lr"] == pytest.approx(1e-5)
    encoder = {id(p) for p in groups["encoder"]["params"]}
    assert encoder == {id(p) for p in task.model.backbone.parameters()}
    decoder = {id(p) for p in groups["decoder"]["params"]}
    assert decoder == {id(p) for p in task.model.head.parameters()} and not encoder & decoder


def test_warmup_decay_factors() -> None:
    cosine = WarmupDecay(total_steps=110, warmup_steps=10, schedule="cosine", min_ratio=0.1)
    assert [cosine(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert cosine(110) == pytest.approx(0.1) and cosine(500) == pytest.approx(0.1)
    poly = WarmupDecay(total_steps=100, warmup_steps=0, schedule="poly", min_ratio=0.0, power=0.9)
    assert poly(50) == pytest.approx(0.5**0.9)
    assert WarmupDecay(10, 2, "constant")(7) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        WarmupDecay(10, 0, "step")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupDecay(10, 11)


def test_quick_config_groups_and_schedule_are_stepped_per_step(tmp_path: Path) -> None:
    """The quick config's optimiser, groups and warmup + cosine schedule, as Lightning applies them."""
    import yaml

    config_path = REPO / "configs/regression/height_quick.yaml"
    config = yaml.safe_load(config_path.read_text())["model"]["init_args"]
    root = _synthetic_pairs(tmp_path / "pairs", n=2, size=64)
    steps = 20
    cli = build_cli(
        [
            "--config", str(config_path), f"--data.pairs={root}", f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--data.train_repeats=10",
            "--report.export=", "--report.plots=false",
        ],
        run=False,
    )  # fmt: skip
    log = _LrLog()
    cli.trainer.callbacks.append(log)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert len(log.lrs) == steps
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    peak = config["optimizer"]["init_args"]["lr"]
    assert optimizer.param_groups[0]["weight_decay"] == config["optimizer"]["init_args"]["weight_decay"]
    warmup = round(config["warmup"] * steps)
    floor = config["min_lr_ratio"]
    assert config["schedule"] == "cosine" and warmup == 2
    for step, lrs in enumerate(log.lrs):
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            progress = (step - warmup) / (steps - warmup)
            factor = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lrs["decoder"] == pytest.approx(peak * factor), step
        assert lrs["encoder"] == pytest.approx(peak * config["encoder_lr_factor"] * factor), step
    assert log.lrs[1]["decoder"] == pytest.approx(peak)  # the peak right after warmup, then it decays
    assert log.lrs[-1]["decoder"] < 0.05 * peak


# ------------------------------------------------------------------------------------------------
# The depth head's final ReLU when training from scratch
# ------------------------------------------------------------------------------------------------


def _l1_steps(task: DenseRegressionTask, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss, _ = task.compute_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def test_fresh_head_trains_from_scratch_with_the_default() -> None:
    spec = {"task": "regression", "backbone": "resnet18", "head_kwargs": {"features": 16}}
    torch.manual_seed(0)
    task = DenseRegressionTask(spec, in_chans=3, loss="l1").train()
    assert task.model.head.output.non_negative is False
    assert task.spec.head_kwargs["head_kwargs"] == {"non_negative": False}  # exported with the spec
    rng = np.random.default_rng(0)
    image = torch.from_numpy(np.stack([_smooth_field(rng, 32) for _ in range(3)]))[None].repeat(2, 1, 1, 1)
    target = 8.0 * image[:, 0] + 4.0 * image[:, 1] + 1.0
    batch = {
        "image": (image - 0.5) / 0.25,
        "target": target,
        "valid": torch.ones_like(target, dtype=torch.bool),
    }
    losses = _l1_steps(task, batch, 15)
    assert losses[-1] < 0.5 * losses[0], losses

    # What the default avoids: with the final ReLU and a head starting below zero nothing ever moves.
    torch.manual_seed(0)
    relu_spec = {**spec, "head_kwargs": {"features": 16, "head_kwargs": {"non_negative": True}}}
    stuck = DenseRegressionTask(relu_spec, in_chans=3, loss="l1").train()
    assert stuck.model.head.output.non_negative is True  # an explicit choice is kept
    with torch.no_grad():
        stuck.model.head.output.conv3.bias.fill_(-100.0)
    stuck_losses = _l1_steps(stuck, batch, 3)
    assert stuck_losses[0] == pytest.approx(stuck_losses[-1])
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in stuck.parameters())
