"""A run's outputs appear together or not at all, and everything checkable is checked before writing."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine

from rsvit.data.io import read_image
from rsvit.inference import InputError, predict_raster
from rsvit.inference.cli import main
from rsvit.inference.engine import OutputWriteError
from rsvit.inference.outputs import dense_classes
from rsvit.inference.report import RasterWarning
from rsvit.weights import WeightsMetadata

META = WeightsMetadata(classes=("water", "field", "forest"), mean=(0.5,) * 3, std=(0.25,) * 3)
SMALL = {"window": 64, "overlap": 16, "metadata": META, "progress": False}


@pytest.fixture
def scene_path(tmp_path, write_raster, scene):
    return write_raster(tmp_path / "scene.tif", scene(96, 80, seed=3))


def _disk_full_on_probabilities(monkeypatch):
    real = dense_classes.to_cog

    def to_cog(partial, output, **kwargs):
        if "probabilities" in partial.name:
            real(partial, output, **kwargs)  # the file is half written when the disk fills up
            raise OSError(errno.ENOSPC, "TIFFRewriteDirectory:Error fetching directory count")
        real(partial, output, **kwargs)

    monkeypatch.setattr(dense_classes, "to_cog", to_cog)


def _visible(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_disk_full_while_finalising_leaves_no_output_and_resume_finishes(
    tmp_path, scene_path, pixel_model, monkeypatch
):
    out = tmp_path / "out" / "map.tif"
    vector = tmp_path / "out" / "map.geojson"
    _disk_full_on_probabilities(monkeypatch)
    with pytest.raises(
        OutputWriteError, match=r"No space left on device.*nothing was left under.*--resume"
    ) as err:
        predict_raster(pixel_model(), scene_path, out, probabilities="uint8", vector=vector, **SMALL)
    assert "\n" not in str(err.value) and isinstance(err.value, OSError)
    assert _visible(out.parent) == []  # no map, no probabilities, no GeoJSON, no sidecar
    assert not any(".staged" in p.name or p.name.endswith(".tmp.tif") for p in out.parent.iterdir())
    monkeypatch.undo()
    report = predict_raster(
        pixel_model(), scene_path, out, probabilities="uint8", vector=vector, resume=True, **SMALL
    )
    assert report.windows == 0 and report.resumed_from == report.strips  # nothing predicted again
    assert _visible(out.parent) == ["map.geojson", "map.tif", "map.tif.aux.xml", "map_probabilities.tif"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_ctrl_c_while_finalising_leaves_no_output(tmp_path, scene_path, pixel_model, monkeypatch):
    def interrupted(partial, output, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dense_classes, "to_cog", interrupted)
    out = tmp_path / "out" / "map.tif"
    with pytest.raises(KeyboardInterrupt):
        predict_raster(
            pixel_model(),
            scene_path,
            out,
            probabilities="uint8",
            vector=tmp_path / "out" / "v.geojson",
            **SMALL,
        )
    assert _visible(out.parent) == []
    assert not any(".staged" in p.name for p in out.parent.iterdir())


def test_cli_reports_a_failed_finalisation_in_one_line(
    tmp_path, scene_path, monkeypatch, capsys, write_raster, scene
):
    from rsvit.models import ModelSpec, build_model, save_model

    spec = ModelSpec("segmentation", "resnet18", head="fcn", num_classes=3, head_kwargs={"channels": 8})
    model = tmp_path / "model.safetensors"
    save_model(model, build_model(spec), spec, META)
    _disk_full_on_probabilities(monkeypatch)
    out = tmp_path / "out" / "map.tif"
    args = ["--model", str(model), "--input", str(scene_path), "--output", str(out), "--quiet"]
    assert main([*args, "--probabilities", "--window", "64"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rsvit predict-raster: error: writing the outputs")
    assert _visible(out.parent) == []
    monkeypatch.undo()
    assert main([*args, "--window", "64"]) == 0
    capsys.readouterr()
    assert main([*args, "--window", "64"]) == 1  # the map exists now
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--overwrite" in err
    assert main([*args, "--window", "64", "--overwrite"]) == 0
    assert "map: " in capsys.readouterr().out
    plain = write_raster(tmp_path / "photo.tif", scene(40, 50), crs=None, transform=Affine.identity())
    no_crs = ["--model", str(model), "--input", str(plain), "--output", str(tmp_path / "p.tif"), "--quiet"]
    assert main(no_crs) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("rsvit predict-raster: warning:") and "no CRS" in err and len(err.splitlines()) == 1


def test_raster_without_crs_fails_before_writing_or_warns(tmp_path, write_raster, scene, pixel_model):
    image = scene(40, 50, seed=1)
    plain = write_raster(tmp_path / "photo.tif", image, crs=None, transform=Affine.identity())
    out = tmp_path / "out" / "map.tif"
    for crs in ("EPSG:4326", "raster"):
        with pytest.raises(ValueError, match=r"no CRS.*--vector-crs pixel"):
            predict_raster(
                pixel_model(), plain, out, vector=tmp_path / "out" / "v.geojson", vector_crs=crs, **SMALL
            )
        assert not out.parent.exists() or _visible(out.parent) == []
    with pytest.warns(RasterWarning, match="no CRS"):
        predict_raster(pixel_model(), plain, out, **SMALL)
    with rasterio.open(out) as dst:
        assert dst.crs is None
    vector = tmp_path / "pixel.geojson"
    with pytest.warns(RasterWarning, match="no CRS"):
        report = predict_raster(
            pixel_model(), plain, tmp_path / "m2.tif", vector=vector, vector_crs="pixel", **SMALL
        )
    assert report.features and "crs" not in json.loads(vector.read_text())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window": 0}, r"window must be at least 1 pixel"),
        ({"window": 64, "overlap": -1}, r"overlap cannot be negative"),
        ({"batch_size": 0}, r"batch_size must be >= 1"),
        ({"vector_crs": "EPSG:3857"}, r"vector_crs must be one of EPSG:4326, raster, pixel"),
    ],
)
def test_settings_are_checked_first(tmp_path, pixel_model, settings, message):
    # the input does not even exist: the settings are refused before anything is opened
    with pytest.raises(ValueError, match=message):
        predict_raster(
            pixel_model(), tmp_path / "missing.tif", tmp_path / "m.tif", progress=False, **settings
        )


def test_tiny_input_summary_has_no_absurd_rate(tmp_path, write_raster, scene, pixel_model):
    tiny = write_raster(tmp_path / "tiny.tif", scene(3, 5))
    report = predict_raster(pixel_model(), tiny, tmp_path / "m.tif", progress=False, metadata=META)
    text = report.summary()
    assert "s/MP" not in text and "15-pixel input" in text
    with rasterio.open(tmp_path / "m.tif") as dst:
        assert dst.shape == (3, 5)


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, scene_path, pixel_model):
    out = tmp_path / "map.tif"
    predict_raster(pixel_model(), scene_path, out, **SMALL)
    before = out.read_bytes()
    with pytest.raises(
        FileExistsError, match=r"map\.tif already exists; pass overwrite=True \(--overwrite\)"
    ):
        predict_raster(pixel_model(seed=1), scene_path, out, **SMALL)
    assert out.read_bytes() == before
    probabilities = tmp_path / "map_probabilities.tif"
    probabilities.write_bytes(b"not mine")  # any of the run's files counts
    second = tmp_path / "second.tif"
    with pytest.raises(FileExistsError, match=r"map_probabilities\.tif already exists"):
        predict_raster(
            pixel_model(),
            scene_path,
            second,
            probabilities="uint8",
            probabilities_output=probabilities,
            **SMALL,
        )
    assert not second.exists() and probabilities.read_bytes() == b"not mine"
    predict_raster(pixel_model(seed=1), scene_path, out, probabilities="uint8", overwrite=True, **SMALL)
    assert out.read_bytes() != before
    with rasterio.open(probabilities) as p:
        assert p.count == 3


def test_all_nodata_input_warns(tmp_path, write_raster, pixel_model):
    empty = write_raster(tmp_path / "empty.tif", np.zeros((3, 40, 40), np.uint8), nodata=0)
    with pytest.warns(RasterWarning, match="only nodata"):
        report = predict_raster(pixel_model(), empty, tmp_path / "m.tif", **SMALL)
    assert report.windows == 0 and report.skipped_windows > 0


def test_single_band_advice_is_repeating_it(tmp_path, write_raster, scene, pixel_model):
    grey = write_raster(tmp_path / "grey.tif", scene(40, 40, bands=1))
    with pytest.raises(InputError, match=r"expects 3.*--bands 1,1,1") as err:
        predict_raster(pixel_model(), grey, tmp_path / "m.tif", **SMALL)
    assert "--bands 1)" not in str(err.value)
    report = predict_raster(
        pixel_model(), grey, tmp_path / "m.tif", bands="1,1,1", **SMALL
    )  # the advice works
    assert report.windows > 0


def test_stored_band_selection_is_applied_and_bands_overrides(tmp_path, write_raster, scene, pixel_model):
    four = write_raster(tmp_path / "four.tif", scene(48, 48, bands=4, seed=4))
    stored = WeightsMetadata(classes=META.classes, mean=META.mean, std=META.std, extra={"bands": [2, 3, 4]})
    settings = {**SMALL, "metadata": stored}
    predict_raster(pixel_model(), four, tmp_path / "stored.tif", **settings)
    predict_raster(pixel_model(), four, tmp_path / "explicit.tif", **{**SMALL, "bands": "2,3,4"})
    predict_raster(pixel_model(), four, tmp_path / "override.tif", bands=[1, 2, 3], **settings)
    maps = {}
    for name in ("stored", "explicit", "override"):
        with rasterio.open(tmp_path / f"{name}.tif") as dst:
            maps[name] = dst.read(1)
    np.testing.assert_array_equal(maps["stored"], maps["explicit"])
    assert (maps["override"] != maps["stored"]).any()


def test_read_errors_are_worded_by_us(tmp_path, data_dir):
    corrupt = data_dir / "geotiff" / "corrupt.tif"
    with pytest.raises(RasterioIOError) as err:
        read_image(corrupt)
    text = str(err.value)
    assert "corrupt.tif" in text and "damaged or truncated" in text and "previous exception" not in text
    from rsvit.inference.reader import SceneReader

    reader = SceneReader(corrupt)
    with pytest.raises(InputError) as err:
        reader.read(0, 0, reader.height, reader.width)
    assert "previous exception" not in str(err.value) and "details.." not in str(err.value)
    assert "GDAL could not decode those pixels" in str(err.value)
