"""Every shipped scene config parses with the CLI and holds the paper's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rsvit.cli.lightning import run_lightning

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "classification").glob("*.yaml"))
PROTOCOLS = ["ucm_82", "aid_28", "aid_55", "nwpu_19", "nwpu_28"]
BACKBONES = ["resnet50", "swin_t", "vitaev2_s"]


def test_every_protocol_and_backbone_has_a_config():
    names = {p.stem for p in CONFIGS}
    expected = {f"{p}_{b}" for p in PROTOCOLS for b in BACKBONES} | {f"millionaid_{b}" for b in BACKBONES}
    assert expected | {"rsscn7_quick"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses(config, capsys):
    assert run_lightning(["fit", "--config", str(config), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["model"]["backbone"] in [*BACKBONES, "resnet18"]


def test_paper_settings():
    for path in CONFIGS:
        cfg = yaml.safe_load(path.read_text())
        if path.stem == "rsscn7_quick":
            continue
        model, data, trainer = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
        spec = model["model"]
        assert model["optimizer"]["init_args"]["lr"] == 5e-4 and model["lr_scale_batch"] == 512
        assert trainer["gradient_clip_val"] == 5.0 and model["label_smoothing"] == 0.1
        backbone = spec["backbone"]
        if path.stem.startswith("millionaid"):
            assert data["batch_size"] * trainer["devices"] == 512
            assert trainer["max_epochs"] == (100 if backbone == "vitaev2_s" else 300)
            assert (
                spec["backbone_kwargs"]["drop_path_rate"]
                == {"resnet50": 0.0, "swin_t": 0.2, "vitaev2_s": 0.0}[backbone]
            )
        else:
            assert data["batch_size"] == 64 and trainer["max_epochs"] == 200 and model["weights"]
            assert (
                spec["backbone_kwargs"]["drop_path_rate"]
                == {"resnet50": 0.0, "swin_t": 0.1, "vitaev2_s": 0.0}[backbone]
            )
