"""``rsvit repeat`` on change and distillation configs: any run report's metrics, mean ± std, errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from rsvit.cli.repeat import add_repeat_arguments, available_metrics, repeat_runs, run_repeat, tabulate_runs
from tasks.test_distillation_task import _rsscn7_short  # tests/ is on the path

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "change" / "levir_quick.yaml"


def _short(data_dir: Path, save_dir: Path) -> list[str]:
    """The change quick-start cut to 3 steps on 64 px crops of all seven pairs, then one validation."""
    return [
        f"--data.root={data_dir / 'levir-cd-samples'}",
        "--data.crop_size=64",
        "--data.batch_size=7",
        "--data.train_repeats=1",
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        "--model.num_plots=0",
    ]


@pytest.fixture(scope="module")
def repeated(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("repeat")
    command = ["--config", str(QUICK), "--seeds", "2", "--first-seed", "3", "--out", str(tmp / "rep")]
    args = add_repeat_arguments(argparse.ArgumentParser()).parse_args(
        [*command, "--", *_short(data_dir, tmp / "runs")]
    )
    assert run_repeat(args) == 0
    return json.loads((tmp / "rep" / "repeat.json").read_text()), tmp / "rep"


def test_the_change_report_headline_is_tabulated(repeated: tuple[dict, Path]) -> None:
    result, out = repeated
    assert result["metric"] == "F1"  # the change report's monitor
    assert [r["seed"] for r in result["runs"]] == [3, 4]
    assert len({r["run"] for r in result["runs"]}) == 2
    losses = []
    for row in result["runs"]:
        report = json.loads((Path(row["run"]) / "metrics.json").read_text())
        assert row["last_F1"] == report["val"]["F1"] and row["best_F1"] == report["best_val"]["F1"]
        assert row["best_step"] == report["best_val"]["step"] == 3
        losses.append(report["val"]["loss"])
    assert losses[0] != losses[1]  # the seeds really differ
    values = [r["last_F1"] for r in result["runs"]]
    assert result["summary"]["last_F1"]["mean"] == pytest.approx(np.mean(values))
    assert result["summary"]["last_F1"]["std"] == pytest.approx(np.std(values))
    table = (out / "repeat.md").read_text()
    assert table.startswith("| seed | last F1 | best F1 | best step | run |") and "mean ± std" in table


def test_another_metric_is_tabulated_from_the_same_reports(repeated: tuple[dict, Path]) -> None:
    result, _ = repeated
    runs = [(r["seed"], r["run"]) for r in result["runs"]]
    rows, summary, table = tabulate_runs(runs, "loss")
    expected = [json.loads((Path(run) / "metrics.json").read_text())["val"]["loss"] for _, run in runs]
    assert [r["last_loss"] for r in rows] == expected
    assert summary["last_loss"]["std"] == pytest.approx(np.std(expected)) and summary["last_loss"]["std"] > 0
    assert f"{np.mean(expected):.4f} ± {np.std(expected):.4f}" in table
    with pytest.raises(ValueError, match=r"metric 'mIoU' is not in .*metrics\.json; this task reports .*F1"):
        tabulate_runs(runs, "mIoU")


def test_nested_entries_are_named_with_slashes() -> None:
    entry = {"epoch": 2, "step": 9, "loss": 0.5, "relative": {"abs_rel": 0.1, "ok": True}, "confusion": [[1]]}
    assert available_metrics(entry) == {"loss": 0.5, "relative/abs_rel": 0.1}


def test_a_missing_metric_stops_after_the_first_run(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metric 'top1' is not in .*; this task reports .*F1.*--metric"):
        repeat_runs([str(QUICK)], [0, 1], _short(data_dir, tmp_path / "runs"), tmp_path / "rep", "top1")
    assert [p.name for p in (tmp_path / "runs" / "levir_quick").iterdir()] == ["version_0"]
    assert not (tmp_path / "rep").exists()


def test_a_distillation_config_tabulates_the_agreement(data_dir: Path, tmp_path: Path) -> None:
    from rsvit.models.spec import ModelSpec, build_model, save_model

    spec = ModelSpec("classification", "resnet18", num_classes=7)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, build_model(spec), spec)
    overrides = [
        f"--model.teacher={teacher}",
        *_rsscn7_short(data_dir),  # 2 batches of 8 images at 32 px, then 2 validated
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]
    config = REPO / "configs" / "distillation" / "rsscn7_quick.yaml"
    result = repeat_runs([str(config)], [0, 1], overrides, tmp_path / "rep")
    assert result["metric"] == "agreement"
    for row in result["runs"]:
        report = json.loads((Path(row["run"]) / "metrics.json").read_text())
        assert row["last_agreement"] == report["val"]["agreement"]
        assert row["best_agreement"] == report["best_val"]["agreement"]
    assert "| seed | last agreement | best agreement | best step | run |" in result["table"]
