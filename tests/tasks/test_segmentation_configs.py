"""The YAML configs: paper settings of RSP, and that LightningCLI builds them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rsvit.cli.lightning import build_cli
from rsvit.demo import demo_config_path
from rsvit.models import ModelSpec

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "segmentation"
PAPER = [f"upernet_{b}_{d}" for b in ("resnet50", "swin_t", "vitaev2_s") for d in ("potsdam", "isaid")]


def _load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_follow_the_official_settings(name: str) -> None:
    cfg = _load(name)
    model, data, trainer = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    spec = ModelSpec.from_dict(model["model"])
    assert spec.head == "upernet" and name.startswith(f"upernet_{spec.backbone}_")
    assert spec.head_kwargs == {"channels": 512, "aux_channels": 256, "aux_index": 2}
    assert model["aux_weight"] == 0.4 and trainer["max_steps"] == 80000
    assert model["eval_mode"] == "slide" and (model["slide_crop"], model["slide_stride"]) == (512, 384)
    optimizer = model["optimizer"]
    if spec.backbone == "resnet50":
        assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["lr"] == 0.01
        assert model["poly_power"] == 0.9 and model["min_lr"] == 1e-4 and model["warmup_iters"] == 0
    else:
        assert optimizer["class_path"] == "torch.optim.AdamW" and optimizer["init_args"]["lr"] == 6e-5
        assert optimizer["init_args"]["weight_decay"] == 0.01 and model["warmup_iters"] == 1500
        assert spec.backbone_kwargs == {"drop_path_rate": 0.3}
    if name.endswith("potsdam"):
        assert data["dataset"] == "potsdam" and data["crop_size"] == 512 and data["ratio_range"] == [0.5, 2.0]
        assert data["cat_max_ratio"] == 0.75 and cfg["report"]["monitor"] == "mF1" and not model["tta_hflip"]
    else:
        assert data["dataset"] == "isaid" and data["crop_size"] == 896 and model["tta_hflip"]
        assert cfg["report"]["monitor"] == "mIoU"
    expected_batch = {"resnet50_potsdam": 8, "vitaev2_s_isaid": 2}.get(name.removeprefix("upernet_"), 4)
    assert data["batch_size"] == expected_batch


def test_cli_builds_a_paper_config_and_links_the_data(tmp_path: Path) -> None:
    cli = build_cli(
        [
            "--config",
            str(CONFIGS / "upernet_resnet50_potsdam.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )
    task, dm = cli.model, cli.datamodule
    assert task.num_classes == 5 and task.class_names == dm.classes
    assert task.palette == [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]]
    assert task.hparams.slide_stride == 384 and task.spec.backbone == "resnet50"
    assert type(task.optimizer_factory([{"params": list(task.parameters())}])).__name__ == "SGD"


def test_demo_config_reads_the_bundled_copy(tmp_path: Path) -> None:
    cli = build_cli(
        ["--config", str(demo_config_path()), f"--trainer.logger.init_args.save_dir={tmp_path}"],
        run=False,
    )
    dm = cli.datamodule
    assert len(dm.dataset("train")) == 10 and len(dm.dataset("val")) == 2
    assert cli.model.num_classes == 6 and cli.trainer.max_steps <= 100


def test_dpt_config_differs_from_upernet_only_in_the_head(tmp_path: Path) -> None:
    """Comparing decoders is one config change: the DPT config keeps the UperNet one's schedule and data."""
    dpt, upernet = _load("dpt_vitaev2_s_potsdam"), _load("upernet_vitaev2_s_potsdam")
    dpt_model = dpt["model"]["init_args"].pop("model")
    upernet_model = upernet["model"]["init_args"].pop("model")
    assert dpt_model["head"] == "dpt" and dpt_model["head_kwargs"] == {"features": 256}
    assert {k: v for k, v in dpt_model.items() if k not in ("head", "head_kwargs")} == {
        k: v for k, v in upernet_model.items() if k not in ("head", "head_kwargs")
    }
    dpt["trainer"]["logger"]["init_args"].pop("name")
    upernet["trainer"]["logger"]["init_args"].pop("name")
    assert dpt == upernet
    cli = build_cli(
        [
            "--config",
            str(CONFIGS / "dpt_vitaev2_s_potsdam.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )
    from rsvit.models.dpt import DPTHead

    assert isinstance(cli.model.model.decode_head, DPTHead) and cli.model.model.decode_head.aux is not None
