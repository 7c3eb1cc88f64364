"""``rsvit benchmark``: the timing protocol's bookkeeping and the command as a user runs it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsvit.benchmark import JOBS, Throughput, make_jobs, measure
from rsvit.cli import main


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
