"""``predict-raster`` on the command line (``python -m rsvit.inference.cli`` and the parser functions)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import rasterio

from rsvit.inference.cli import add_predict_raster_arguments, main
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.weights import WeightsMetadata


def _model(tmp_path):
    spec = ModelSpec("segmentation", "resnet18", head="fcn", num_classes=2, head_kwargs={"channels": 16})
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model.safetensors", build_model(spec), spec, WeightsMetadata(classes=("land", "water")))
    return run


def test_cli_writes_map_probabilities_and_polygons(tmp_path, data_dir, capsys):
    run = _model(tmp_path)
    out = tmp_path / "out" / "map.tif"
    code = main(
        [
            "--model",
            str(run),
            "--input",
            str(data_dir / "geotiff" / "RGB.byte.tif"),
            "--output",
            str(out),
            "--probabilities",
            "--vector",
            str(tmp_path / "out" / "map.geojson"),
            "--window",
            "512",
            "--overlap",
            "64",
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"map: {out}" in printed and "polygons" in printed
    with rasterio.open(out.with_name("map_probabilities.tif")) as p:
        assert p.count == 2 and p.dtypes[0] == "uint8"
    assert (tmp_path / "out" / "map.geojson").stat().st_size > 0


def test_cli_reports_input_errors_and_exits_1(tmp_path, data_dir, capsys):
    run = _model(tmp_path)
    code = main(
        [
            "--model",
            str(run / "model.safetensors"),
            "--input",
            str(data_dir / "geotiff" / "rgb1_fake_nir_epsg3857.tif"),
            "--output",
            str(tmp_path / "map.tif"),
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "error:" in err and "expects 3" in err and "--bands" in err
    code = main(
        ["--model", str(tmp_path / "nothing"), "--input", "x.tif", "--output", str(tmp_path / "m.tif")]
    )
    assert code == 1 and "not found" in capsys.readouterr().err


def test_parser_defaults_and_module_entry_point():
    parser = argparse.ArgumentParser()
    add_predict_raster_arguments(parser)
    args = parser.parse_args(["--model", "m", "--input", "a.tif", "--output", "b.tif"])
    # window and overlap left to the model file's recommendation (see predict_raster)
    assert (args.window, args.overlap, args.batch_size, args.probabilities, args.vector_crs) == (
        None,
        None,
        4,
        None,
        "EPSG:4326",
    )
    assert (
        parser.parse_args(
            ["--model", "m", "--input", "a", "--output", "b", "--probabilities", "float16"]
        ).probabilities
        == "float16"
    )
    done = subprocess.run(
        [sys.executable, "-m", "rsvit.inference.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--input-b" in done.stdout and "--resume" in done.stdout


def test_a_checkpoint_that_is_not_a_model_file_gets_advice_that_works(tmp_path):
    """The advice names the steps that turn weights into a model file, not ``rsvit convert`` alone."""
    import pytest

    from rsvit.inference.model import resolve_model

    checkpoint = tmp_path / "official.pth"
    checkpoint.write_bytes(b"not read")
    with pytest.raises(ValueError, match="not an rsvit model file") as info:
        resolve_model(checkpoint)
    message = str(info.value)
    assert "rsvit.weights.load_into" in message and "save_model" in message
    assert "rsvit convert)" not in message
