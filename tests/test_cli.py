"""The ``rsvit`` command as a user types it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rsvit.cli import main
from rsvit.demo import sample_image_path


def test_models_lists_backbones_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith("(")}
    assert {"vitaev2_s", "resnet50", "swin_t", "vit_b", "vit_hybrid"} <= rows.keys()
    # SPEC: the ViTAEv2-S backbone has 18.84 M parameters without the unused relative-position tables.
    assert rows["vitaev2_s"].split()[2] == "18.84"
    assert rows["resnet50"].split()[2] == "23.51"


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "rsvit.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("models", "demo", "convert", "predict-raster"):
        assert command in done.stdout


@pytest.mark.parametrize("argv", [[], ["nonsense"]])
def test_bad_usage_exits_nonzero(argv):
    with pytest.raises(SystemExit) if argv else pytest.raises(AssertionError):
        assert main(argv) == 0


@pytest.mark.parametrize(
    ("config", "task"),
    [
        ("configs/classification/rsscn7_quick.yaml", "classification"),
        ("configs/segmentation/dubai_quick.yaml", "segmentation"),
        ("configs/change/levir_quick.yaml", "change"),
        ("configs/regression/height_quick.yaml", "regression"),
    ],
)
def test_training_commands_find_their_task_from_the_config(config, task):
    from rsvit.cli.lightning import task_class_of

    repo = sample_image_path().parents[3]
    assert task_class_of(["fit", "--config", str(repo / config)]).family == task
    overridden = ["fit", "--config", str(repo / config), "--model.class_path=rsvit.tasks.SegmentationTask"]
    assert task_class_of(overridden).family == "segmentation"


def test_unknown_task_is_refused(capsys, tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text("model:\n  class_path: rsvit.tasks.NoSuchTask\n")
    assert main(["fit", "--config", str(config)]) == 1
    assert "cannot be imported" in capsys.readouterr().err
    config.write_text("model:\n  backbone: resnet18\n")
    assert main(["fit", "--config", str(config)]) == 1
    assert "does not name its task" in capsys.readouterr().err


def test_python_dash_m_rsvit_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "rsvit", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "fit|validate|test|predict" in done.stdout


def test_the_last_named_task_class_wins(tmp_path):
    from rsvit.cli.lightning import named_class_path, task_class_of

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("model:\n  class_path: rsvit.tasks.ChangeDetectionTask\n")
    second.write_text("model:\n  init_args: {num_plots: 1}\n")  # arguments only: the class stays
    args = ["fit", "--config", str(first), f"--config={second}"]
    assert named_class_path(args) == "rsvit.tasks.ChangeDetectionTask"
    assert (
        named_class_path([*args, "--model", "{init_args: {num_plots: 2}}"])
        == "rsvit.tasks.ChangeDetectionTask"
    )
    assert task_class_of([*args, "--model=SegmentationTask"]).__name__ == "SegmentationTask"
    assert named_class_path(["fit", "--trainer.max_steps=3"]) is None


_LIGHT_CALLS = [
    ["--help"],
    ["models", "--help"],
    ["demo", "--help"],
    ["predict-raster", "--help"],
    ["repeat", "--help"],
    ["export-backbone", "--help"],
    ["zero-shot", "--help"],
    ["convert", "--help"],
    ["split", "--help"],
    ["benchmark", "--help"],
    ["predict-raster"],  # missing arguments: an argument error
    ["demo", "--steps", "many"],
    ["nonsense"],
]


def test_help_and_argument_errors_load_no_torch():
    """Help and argument errors are answered from the light argument modules alone."""
    script = (
        "import json, sys, contextlib, io\n"
        "from rsvit.cli import main\n"
        f"calls = {_LIGHT_CALLS!r}\n"
        "codes = []\n"
        "for argv in calls:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            codes.append(main(argv))\n"
        "        except SystemExit as exc:\n"
        "            codes.append(exc.code)\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'lightning', 'rasterio') if m in sys.modules)\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["codes"] == [0] * 10 + [2] * 3


def test_demo_help_describes_what_the_demo_does():
    done = subprocess.run(
        [sys.executable, "-m", "rsvit", "demo", "--help"], capture_output=True, text=True, check=True
    )
    text = " ".join(done.stdout.split())
    assert "held-out Dubai tile" in text and "NAIP" in text and "mIoU" in text
    assert "list backbones and run one" not in text


def test_rsvit_errors_of_any_type_are_one_line_with_status_1(tmp_path, capsys, monkeypatch):
    """A hostile checkpoint is refused by an error that is not a ValueError: still one line, rc 1."""
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Evil()}))
    argv = ["demo", "--no-table", "--backbone-only", "--backbone", "resnet18"]
    argv += ["--weights", str(evil), "--out", str(tmp_path / "out")]
    monkeypatch.delenv("RSVIT_DEBUG", raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rsvit demo: error: ") and "\n" not in err
    assert "Traceback" not in err
    from rsvit.weights.errors import UnsafeCheckpointError

    with pytest.raises(UnsafeCheckpointError):
        main([*argv, "--debug"])
    monkeypatch.setenv("RSVIT_DEBUG", "1")
    with pytest.raises(UnsafeCheckpointError):
        main(argv)


def test_which_errors_count_as_user_errors():
    from rsvit.cli.errors import is_user_error, one_line

    own = type("RsvitError", (Exception,), {"__module__": "rsvit.errors"})
    derived = type("SpecError", (own,), {"__module__": "somewhere.else"})
    assert is_user_error(own("x")) and is_user_error(derived("x"))
    assert is_user_error(KeyError("k")) and is_user_error(FileNotFoundError("f"))
    assert not is_user_error(RuntimeError("bug")) and not is_user_error(ZeroDivisionError())
    assert one_line(KeyError("missing key 'a'")) == "missing key 'a'"
    assert one_line(ValueError("two\n  lines")) == "two lines"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"model:\n  class_path: rsvit.tasks.SegmentationTask\n   init_args: {}\n", "line 3"),
        (b"- model: 1\n- data: 2\n", "not a mapping"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        (b"model: !!python/object:os.system {}\n", "line 1"),
        (b"", "is empty"),
        (b"# only a comment\n", "is empty"),
    ],
)
def test_malformed_configs_name_file_line_and_fix(tmp_path, capsys, content, expected):
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    assert main(["fit", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(config) in err and expected in err


def test_export_backbone_reads_the_model_every_run_exports(tmp_path, capsys):
    """A run folder without checkpoints (the demo's) exports from its model.safetensors."""
    import torch
    from safetensors.torch import load_file

    from rsvit.models import ModelSpec, build_model, save_model
    from rsvit.weights import WeightsMetadata, read_metadata

    spec = ModelSpec(task="segmentation", backbone="resnet18", head="fcn", num_classes=3, in_chans=4)
    model = build_model(spec)
    run = tmp_path / "run"
    meta = WeightsMetadata(classes=("a", "b", "c"), extra={"bands": [1, 2, 3, 4]})
    save_model(run / "model.safetensors", model, spec, meta)
    out = tmp_path / "backbone.safetensors"
    assert main(["export-backbone", str(run), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    written = read_metadata(out)
    assert written.architecture == "resnet18" and written.extra["bands"] == [1, 2, 3, 4]
    state = load_file(out)
    expected = model.backbone.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export-backbone", str(empty), str(tmp_path / "x.safetensors")]) == 1
    assert "model.safetensors" in capsys.readouterr().err


def test_distill_runs_only_distillation_configs(capsys):
    """``rsvit distill`` is ``fit`` for distillation configs; another task is told to use ``fit``."""
    from pathlib import Path

    from rsvit.cli import _distill_as_fit, main

    configs = Path(__file__).resolve().parents[1] / "configs"
    code = main(["distill", "--config", str(configs / "segmentation" / "dubai_quick.yaml")])
    assert code == 1
    assert "rsvit distill takes a distillation config" in capsys.readouterr().err
    quick = str(configs / "distillation" / "rsscn7_quick.yaml")
    distill = ["distill", "--config", quick, "--trainer.max_steps=1"]
    assert _distill_as_fit(distill) == ["fit", *distill[1:]]
    encoder = [
        "distill",
        "--config",
        str(configs / "distillation" / "sam_tiny_to_resnet18_encoder_quick.yaml"),
    ]
    assert _distill_as_fit(encoder) == ["fit", *encoder[1:]]
