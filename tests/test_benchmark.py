"""``rsvit benchmark``: the timing protocol's bookkeeping and the command as a user runs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from rsvit.benchmark import JOBS, Inputs, Throughput, make_jobs, measure
from rsvit.cli import main
from rsvit.models.spec import ModelSpec, build_model, save_model

REPO = Path(__file__).resolve().parents[1]


def test_ratios_are_medians_of_per_round_ratios():
    result = Throughput(
        rates={
            "base": {"fwd fp32": [10.0, 20.0, 10.0], "fwd bf16": [20.0, 40.0, 20.0]},
            "other": {"fwd fp32": [30.0, 20.0, 25.0], "fwd bf16": [50.0, 100.0, 60.0]},
        },
        baseline="base",
    )
    # Per-round ratios 3.0, 1.0, 2.5: the median of ratios, not the ratio of medians (25 / 10).
    assert result.ratio("other", "fwd fp32") == pytest.approx(2.5)
    assert result.ratio("base", "fwd fp32") == pytest.approx(1.0)
    # Across jobs: bf16 of one model against fp32 of the baseline.
    assert result.ratio("other", "fwd bf16", "fwd fp32") == pytest.approx(5.0)
    assert result.ratio("base", "fwd fp32", base="other") == pytest.approx(0.4)  # 1/3, 1, 0.4
    table = result.table().splitlines()
    assert "ratio to base (fwd fp32)" in table[0]
    assert table[1].split()[:3] == ["base", "10.00", "20.00"] and table[1].endswith("1.00x")
    assert table[2].split()[:3] == ["other", "25.00", "60.00"] and table[2].endswith("2.50x")


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 51)
    )


def test_training_jobs_update_the_weights_and_forward_jobs_do_not():
    model = _tiny()
    jobs = make_jobs(model, batch_size=2, size=32, jobs=("fwd fp32", "train fp32"))
    assert list(jobs) == ["fwd fp32", "train fp32"]
    before = model[0].weight.detach().clone()
    jobs["fwd fp32"]()
    assert torch.equal(model[0].weight, before)
    jobs["train fp32"]()
    assert not torch.equal(model[0].weight, before)
    assert model.training  # left as the last job set it
    with pytest.raises(ValueError, match="unknown benchmark jobs"):
        make_jobs(model, 2, 32, jobs=("fwd fp64",))


class _TinyPair(nn.Module):
    """Dense logits from two 4-band images, like a change detector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert a.shape[1] == b.shape[1] == 4
        return self.conv(a - b)


def test_jobs_feed_every_image_and_train_against_per_pixel_labels():
    model = _TinyPair()
    jobs = make_jobs(model, batch_size=2, size=16, jobs=("fwd fp32", "train fp32"), inputs=Inputs(4, 2))
    before = model.conv.weight.detach().clone()
    jobs["fwd fp32"]()
    assert torch.equal(model.conv.weight, before)
    jobs["train fp32"]()  # cross-entropy against (2, 16, 16) labels drawn for the (2, 3, 16, 16) logits
    assert not torch.equal(model.conv.weight, before)


def test_measure_times_every_job_of_every_model_each_round():
    lines = []
    result = measure(
        {"b": _tiny, "a": _tiny},
        baseline="a",
        batch_size=2,
        size=32,
        rounds=3,
        iters=1,
        progress=lines.append,
    )
    assert list(result.rates) == ["a", "b"]  # the baseline first
    for model in ("a", "b"):
        assert list(result.rates[model]) == list(JOBS)
        assert all(len(v) == 3 and min(v) > 0 for v in result.rates[model].values())
    assert lines == ["warm-up a", "warm-up b"] + [f"round {r}/3 {m}" for r in (1, 2, 3) for m in "ab"]
    with pytest.raises(ValueError, match="baseline 'c'"):
        measure({"a": _tiny}, baseline="c")
    with pytest.raises(ValueError, match="rounds must be positive"):
        measure({"a": _tiny}, baseline="a", rounds=0)


def test_command_times_rsvit_models_against_the_first(capsys):
    argv = ["benchmark", "--models", "resnet18", "vitaev2_s", "--batch-size", "2", "--size", "64"]
    argv += ["--rounds", "1", "--iters", "1", "--jobs", "fwd fp32", "train fp32", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("batch 2, 64x64")
    assert "ratio to resnet18 (fwd fp32, train fp32)" in lines[1]
    assert "fwd bf16" not in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["resnet18"][-2:] == ["1.00x,", "1.00x"]
    assert float(rows["vitaev2_s"][1]) > 0 and rows["vitaev2_s"][-1].endswith("x")
    assert "benchmark" not in captured.err  # --quiet: no progress bar


def test_command_rejects_unknown_models_before_building_any(capsys):
    assert main(["benchmark", "--models", "vitaev2_s", "resnet5"]) == 1
    captured = capsys.readouterr()
    assert "unknown backbone 'resnet5'" in captured.err and "resnet50" in captured.err
    assert captured.out == ""  # nothing was set up or timed


# -- a distillation teacher against its student --------------------------------------------------------

CELL = re.compile(r"([\d.]+) \(([\d.]+)-([\d.]+)\)")  # median (slowest-fastest round)
RATIO = re.compile(r"([\d.]+)x \(([\d.]+)-([\d.]+)\)")


def _save(path: Path, spec: ModelSpec) -> Path:
    save_model(path, build_model(spec), spec)
    return path


def _comparison(out: str, jobs: list[str]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """The teacher, student and ratio rows of the printed table, as (median, low, high) per job."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("img/s"))
    assert lines[header].split()[1:] == [w for j in jobs for w in j.split()]
    rows = {}
    for line, (name, pattern) in zip(
        lines[header + 1 :], [("teacher", CELL), ("student", CELL), ("student/teacher", RATIO)], strict=True
    ):
        assert line.split()[0] == name
        cells = [tuple(map(float, m.groups())) for m in pattern.finditer(line)]
        assert len(cells) == len(jobs), line
        rows[name] = dict(zip(jobs, cells, strict=True))
    return rows


def test_teacher_and_student_files_are_timed_in_the_same_rounds(tmp_path, capsys):
    teacher = _save(tmp_path / "t.safetensors", ModelSpec("classification", "resnet18", num_classes=7))
    student = _save(tmp_path / "s.safetensors", ModelSpec("classification", "lcnet_050", num_classes=7))
    jobs = ["fwd fp32", "train fp32"]
    argv = ["benchmark", "--teacher", str(teacher), "--student", str(student), "--batch-size", "2"]
    assert main([*argv, "--size", "32", "--rounds", "3", "--iters", "1", "--jobs", *jobs, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("teacher: classification resnet18/") and f"({teacher})" in out.splitlines()[0]
    assert out.splitlines()[1].startswith("student: classification lcnet_050/")
    rows = _comparison(out, jobs)
    for job in jobs:
        for name in ("teacher", "student"):
            median, low, high = rows[name][job]
            assert 0 < low <= median <= high
        ratio, low, high = rows["student/teacher"][job]
        assert 0 < low <= ratio <= high
        # Each round's ratio lies between the slowest student over the fastest teacher and the reverse
        # (the figures are printed to 2 decimals, hence the slack).
        t_low, t_high = rows["teacher"][job][1:]
        s_low, s_high = rows["student"][job][1:]
        assert s_low / t_high * 0.98 - 0.01 <= low and high <= s_high / t_low * 1.02 + 0.01


def test_distillation_config_gives_the_student_and_change_pairs_are_timed(tmp_path, capsys):
    config = REPO / "configs" / "distillation" / "levir_quick.yaml"
    teacher = _save(tmp_path / "t.safetensors", ModelSpec("change", "bit_resnet18", num_classes=2))
    argv = ["benchmark", "--config", str(config), "--teacher", str(teacher), "--batch-size", "1"]
    assert (
        main([*argv, "--size", "64", "--rounds", "1", "--iters", "1", "--jobs", "fwd fp32", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("teacher: change bit_resnet18/")
    assert out.splitlines()[1].startswith("student: change lcnet_050/") and str(config) in out.splitlines()[1]
    rows = _comparison(out, ["fwd fp32"])
    teacher_rate, student_rate = rows["teacher"]["fwd fp32"][0], rows["student"]["fwd fp32"][0]
    ratio, low, high = rows["student/teacher"]["fwd fp32"]
    assert teacher_rate > 0 and student_rate > 0 and low == ratio == high  # one round: one ratio
    assert ratio == pytest.approx(student_rate / teacher_rate, rel=0.02, abs=0.01)


def test_teacher_and_student_that_cannot_be_compared_are_refused(tmp_path, capsys):
    scene = _save(tmp_path / "scene.safetensors", ModelSpec("classification", "resnet18", num_classes=7))
    seg = ModelSpec("segmentation", "resnet18", "fcn", num_classes=7, head_kwargs={"channels": 8})
    segmentation = _save(tmp_path / "seg.safetensors", seg)
    cases = [
        (["--teacher", str(scene), "--student", str(segmentation)], "the teacher has task='classification'"),
        (["--teacher", str(scene)], "no student"),
        (["--student", str(scene)], "no teacher"),
        (["--teacher", str(tmp_path / "none.safetensors"), "--student", str(scene)], "teacher model file"),
        (["--config", str(REPO / "configs" / "change" / "levir_quick.yaml")], "not a distillation task"),
        (["--teacher", str(scene), "--student", str(scene), "--baseline", "resnet18"], "--baseline"),
    ]
    for args, message in cases:
        assert main(["benchmark", *args, "--quiet"]) == 1
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == "", args
