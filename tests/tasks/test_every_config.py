"""Every YAML config in ``configs/`` (and the demo's) builds through the real command line.

``rsvit fit --config X`` reads the task class from the config and builds its LightningCLI; here each
config is built with ``run=False`` (trainer, task and DataModule instantiated, nothing trained), its data
pointed at the small real samples of its family and its starting-weight files left out, so what is
checked is the config itself: class paths, argument names, links and callbacks.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from rsvit.cli.lightning import build_cli, task_class_of
from rsvit.demo import demo_config_path
from rsvit.tasks.base import BaseTask

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [*sorted((REPO / "configs").glob("*/*.yaml")), demo_config_path()]


def _data_overrides(config: Path, family: str, data_dir: Path) -> list[str]:
    """Point a config's data at the shared samples of its family (the configs name full datasets)."""
    data_class = yaml.safe_load(config.read_text()).get("data", {}).get("class_path", "")
    if data_class.endswith("UnlabelledDataModule"):  # windows of a raster
        return [f"--data.path={data_dir / 'geotiff' / 'naip' / 'm_4709963_se_14_1_20200831.tif'}"]
    if family == "classification":
        return [
            f"--data.root={data_dir / 'rsscn7-dev'}",
            "--data.layout=folders",
            "--data.train_file=null",
            "--data.val_file=null",
            "--data.image_dir=null",
            "--data.train_fraction=0.5",
        ]
    if family in ("segmentation", "promptable"):
        return [
            f"--data.root={data_dir / 'dubai-seg'}",
            "--data.dataset=dubai",
            "--data.train_split=[1]",
            "--data.val_split=[6]",
        ]
    if family == "change":
        return [f"--data.root={data_dir / 'levir-cd-samples'}"]
    if family == "detection":  # built only: the patches are cut when the data is set up
        return [f"--data.root={data_dir / 'dota-samples'}", "--data.train_split=.", "--data.val_split=."]
    elevation = data_dir / "geotiff" / "elevation"
    return [f"--data.pairs=[[{elevation / 'dsm.tif'}, {elevation / 'hag.tif'}]]"]


def test_every_family_has_a_config() -> None:
    families = {task_class_of(["--config", str(c)]).family for c in CONFIGS}
    assert families == {"classification", "segmentation", "change", "regression", "detection", "promptable"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_builds_through_the_command_line(config: Path, data_dir: Path, tmp_path: Path) -> None:
    task = task_class_of(["fit", "--config", str(config)])
    assert issubclass(task, BaseTask)
    accepted = inspect.signature(task).parameters
    weights = [f"--model.{name}=null" for name in ("weights", "backbone_weights") if name in accepted]
    cli = build_cli(
        [
            "--config",
            str(config),
            *_data_overrides(config, task.family, data_dir),
            *weights,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ],
        run=False,
    )
    setup = task.command_line()
    assert type(cli.model) is task and isinstance(cli.datamodule, setup.datamodule)
    assert cli.model.spec is not None and cli.model.spec.task == task.family
    for key, callback in setup.callbacks.items():
        assert sum(isinstance(cb, callback) for cb in cli.trainer.callbacks) == 1, key
    for link in setup.links:  # what the data says is what the task got
        source = getattr(cli.datamodule, link.source)
        target = cli.model.hparams[link.target]
        assert target == (list(source) if isinstance(source, tuple) else source), link
