"""The scene task end to end through the LightningCLI on a small synthetic dataset.

One short fit (module fixture) feeds the report, validate/test, predict and export tests.
"""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rsvit.cli import main
from rsvit.cli.export_backbone import add_export_backbone_arguments, run_export_backbone
from rsvit.cli.lightning import run_lightning as run_lightning_cli
from rsvit.cli.repeat import add_repeat_arguments, run_repeat
from rsvit.models.backbones.factory import create_backbone
from rsvit.models.classifier import build_classifier
from rsvit.weights import load, load_into, read_metadata

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def make_tree(root, per_class=8, size=40):
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-25, 25, (size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.png")
    return root


def write_config(path, data_root, runs, **extra):
    config = {
        "seed_everything": 1,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "gradient_clip_val": 5.0,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(runs), "name": "synthetic"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True},
                }
            ],
        },
        "model": {
            "class_path": "rsvit.tasks.ClassificationTask",
            "init_args": {
                "model": {"backbone": "test_resnet"},
                "optimizer": {
                    "class_path": "torch.optim.AdamW",
                    "init_args": {"lr": 0.01, "weight_decay": 0.05},
                },
                "lr_scale_batch": 0,
            },
        },
        "data": {
            "class_path": "rsvit.datamodules.SceneDataModule",
            "init_args": {
                "root": str(data_root),
                "layout": "folders",
                "train_fraction": 0.5,
                "batch_size": 4,
                "num_workers": 0,
                "input_size": 32,
            },
        },
    }
    for key, value in extra.items():
        section, name = key.split("__")
        target = config[section]
        (target["init_args"] if section in ("model", "data") else target)[name] = value
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scene")
    data = make_tree(tmp / "data")
    config = write_config(tmp / "config.yaml", data, tmp / "runs")
    assert run_lightning_cli(["fit", "--config", str(config)]) == 0
    return {"tmp": tmp, "data": data, "config": config, "run": tmp / "runs" / "synthetic" / "version_0"}


def test_fit_writes_report_checkpoints_and_config(fitted):
    run = fitted["run"]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((run / "metrics.json").read_text())
    assert report["classes"] == ["blue", "green", "red"]
    assert [h["epoch"] for h in report["history"]] == [0, 1]
    val = report["val"]
    assert set(val["per_class"]) == {"blue", "green", "red"}
    confusion = np.array(val["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == 12  # half of 3 x 8 images
    assert val["acc1"] == pytest.approx(np.trace(confusion) / 12)
    assert val["acc3"] == pytest.approx(1.0)  # top-k is capped at the class count
    assert report["best_val"]["acc1"] == max(h["acc1"] for h in report["history"])
    with Image.open(run / "confusion_val.png") as png:
        assert png.width > 200
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_test_subcommand_adds_test_results(fitted, tmp_path):
    ckpt = fitted["run"] / "checkpoints" / "last.ckpt"
    args = ["test", "--config", str(fitted["config"]), "--ckpt_path", str(ckpt)]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    assert run_lightning_cli(args) == 0
    report = json.loads((tmp_path / "synthetic" / "version_0" / "metrics.json").read_text())
    assert report["test"]["confusion"] and np.array(report["test"]["confusion"]).sum() == 12
    assert (tmp_path / "synthetic" / "version_0" / "confusion_test.png").is_file()


def test_predict_writes_csv_with_top_k(fitted, tmp_path):
    out = tmp_path / "pred.csv"
    args = [
        "predict",
        "--config",
        str(fitted["config"]),
        "--ckpt_path",
        str(fitted["run"] / "checkpoints" / "last.ckpt"),
    ]
    args += ["--data.predict_path", str(fitted["data"] / "red"), "--prediction_writer.output", str(out)]
    args += ["--prediction_writer.top_k", "2", "--trainer.logger", "false"]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    assert run_lightning_cli(args) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "class_1", "prob_1", "class_2", "prob_2"]
    assert len(rows) == 8 and all(r["file"].endswith(".png") for r in rows)
    assert (tmp_path / "config.yaml").is_file()  # the run's config lands beside the run, not in the cwd
    for r in rows:
        assert float(r["prob_1"]) >= float(r["prob_2"]) >= 0 and float(r["prob_1"]) <= 1
        assert r["class_1"] in COLOURS


def test_export_backbone_round_trip(fitted, tmp_path, capsys):
    out = tmp_path / "backbone.safetensors"
    args = add_export_backbone_arguments(argparse.ArgumentParser()).parse_args([str(fitted["run"]), str(out)])
    assert run_export_backbone(args) == 0
    assert "test_resnet" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta.architecture == "test_resnet" and meta.input_size == (3, 32, 32)
    assert meta.classes == ("blue", "green", "red")
    assert meta.mean == pytest.approx((0.485, 0.456, 0.406))
    result = load(out)
    assert "fc.weight" not in result.state_dict
    # The weights equal those of the run's last checkpoint, as a classifier body and as a backbone.
    ckpt = torch.load(fitted["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    trained = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    fresh = build_classifier("test_resnet", 10, weights=out)
    assert torch.equal(fresh.conv1[0].weight, trained["conv1.0.weight"])
    assert torch.equal(fresh.layer1[0].bn1.running_mean, trained["layer1.0.bn1.running_mean"])
    backbone = create_backbone("test_resnet")
    loaded = load_into(backbone, out)
    assert not loaded.missing_keys and not loaded.mismatched_keys
    assert torch.equal(backbone.model.conv1[0].weight, trained["conv1.0.weight"])


def test_repeat_tabulates_mean_and_std(fitted, tmp_path, capsys):
    args = add_repeat_arguments(argparse.ArgumentParser()).parse_args(
        [
            "--config",
            str(fitted["config"]),
            "--seeds",
            "2",
            "--first-seed",
            "5",
            "--out",
            str(tmp_path / "rep"),
            "--",
            "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    assert run_repeat(args) == 0
    result = json.loads((tmp_path / "rep" / "repeat.json").read_text())
    assert [r["seed"] for r in result["runs"]] == [5, 6]
    accs = [r["last_acc1"] for r in result["runs"]]
    assert result["summary"]["last_acc1"]["mean"] == pytest.approx(np.mean(accs))
    assert result["summary"]["last_acc1"]["std"] == pytest.approx(np.std(accs))
    assert "mean ± std" in (tmp_path / "rep" / "repeat.md").read_text()
    assert len({r["run"] for r in result["runs"]}) == 2


def test_bad_cli_input_gives_clear_errors(fitted, tmp_path, capsys):
    assert run_lightning_cli(["train"]) == 2
    assert "expected one of fit, validate, test, predict" in capsys.readouterr().err
    assert main(["export-backbone", str(tmp_path / "missing"), str(tmp_path / "x.safetensors")]) == 1
    assert "run folder or checkpoint not found" in capsys.readouterr().err
    (tmp_path / "empty_class" / "a").mkdir(parents=True)
    config = write_config(tmp_path / "c.yaml", tmp_path / "empty_class", tmp_path / "runs")
    with pytest.raises(ValueError, match="has no images"):
        run_lightning_cli(["fit", "--config", str(config)])
