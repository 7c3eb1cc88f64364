"""``rsvit zero-shot`` end to end on real RSSCN7 images with seeded tiny CLIP weights."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.clip.tiny_clip import seeded_tiny_clip
from rsvit.cli.zero_shot import OUTPUT_FILES, add_zero_shot_arguments, run_zero_shot

RSSCN7 = ["aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"]


def _args(*argv: str) -> argparse.Namespace:
    return add_zero_shot_arguments(argparse.ArgumentParser()).parse_args(list(argv))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    _, model = seeded_tiny_clip(folder, seed=11)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return folder / "rsvit-tiny-clip.json", path, model


def _read_outputs(out):
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "metrics.json").read_text())


def _check_consistent(rows, metrics, classes):
    labels = np.array([int(r["label"]) for r in rows])
    predictions = np.array([int(r["prediction"]) for r in rows])
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for label, prediction in zip(labels, predictions, strict=True):
        confusion[label, prediction] += 1
    assert metrics["confusion"] == confusion.tolist()
    assert metrics["num_images"] == len(rows)
    assert metrics["accuracy"] == pytest.approx(100.0 * np.mean(labels == predictions))
    for i, value in enumerate(metrics["per_class_accuracy"]):
        assert value == pytest.approx(100.0 * confusion[i, i] / confusion[i].sum())
    for r in rows:
        assert r["label_name"] == classes[int(r["label"])]
        assert r["prediction_name"] == classes[int(r["prediction"])]
        assert int(r["correct"]) == int(r["label"] == r["prediction"])
        assert 0.0 < float(r["probability"]) <= 1.0


def test_folder_end_to_end(data_dir, tiny_checkpoint, tmp_path, capsys):
    config, checkpoint, model = tiny_checkpoint
    out = tmp_path / "run"
    argv = ["--checkpoint", str(checkpoint), "--model-config", str(config), "--out", str(out)]
    argv += ["--limit-per-class", "2", "--templates", "skyclip", "--batch-size", "5"]
    assert run_zero_shot(_args(str(data_dir / "rsscn7-dev"), *argv)) == 0
    rows, metrics = _read_outputs(out)
    assert len(rows) == 14 and metrics["classes"] == RSSCN7
    assert metrics["prompt_names"][3] == "river or lake"
    assert metrics["templates"] == ["a satellite photo of {}.", "a satellite image of {}"]
    assert metrics["averaging"] == "normalise-then-mean" and metrics["logit_scale"] == 100.0
    assert metrics["model"]["architecture"] == "rsvit-tiny-clip"
    assert [sum(1 for r in rows if r["label_name"] == c) for c in RSSCN7] == [2] * 7
    _check_consistent(rows, metrics, RSSCN7)
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "14 images, 7 classes: top-1" in capsys.readouterr().out

    # the predictions are those of the seeded model: recompute one image independently
    from PIL import Image

    from rsvit.models.clip import build_text_classifier, wrap_model

    clip = wrap_model(model, "rsvit-tiny-clip")
    weights = build_text_classifier(model, clip.tokenizer, metrics["prompt_names"], metrics["templates"])
    first = rows[0]
    image = clip.preprocess(Image.open(first["path"]).convert("RGB"))[None]
    with torch.no_grad():
        feature = torch.nn.functional.normalize(model.encode_image(image), dim=-1)
    assert int((feature @ weights.T).argmax()) == int(first["prediction"])

    # never over existing outputs unless asked
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_zero_shot(_args(str(data_dir / "rsscn7-dev"), *argv))
    assert run_zero_shot(_args(str(data_dir / "rsscn7-dev"), *argv, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # no temporary files left


def test_split_file_end_to_end(data_dir, tiny_checkpoint, tmp_path):
    config, checkpoint, _ = tiny_checkpoint
    root = data_dir / "rsscn7-dev"
    split = tmp_path / "valid_labels.txt"
    lines = []
    for class_id, name in enumerate(RSSCN7[:3]):
        for image in sorted((root / name).iterdir())[:2]:
            lines.append(f"{name}/{image.name} {name} {class_id}\n")
    split.write_text("".join(lines))
    out = tmp_path / "split-run"
    templates = tmp_path / "templates.txt"
    templates.write_text("a drone photo of {}.\n")
    argv = ["--checkpoint", str(checkpoint), "--model-config", str(config), "--split-file", str(split)]
    argv += ["--out", str(out), "--templates", str(templates), "--averaging", "mean-then-normalise"]
    assert run_zero_shot(_args(str(root), *argv, "--dataset", "rsscn7")) == 0
    rows, metrics = _read_outputs(out)
    assert len(rows) == 6 and metrics["classes"] == RSSCN7[:3]
    assert metrics["templates"] == ["a drone photo of {}."] and metrics["averaging"] == "mean-then-normalise"
    _check_consistent(rows, metrics, RSSCN7[:3])


def test_bad_inputs(data_dir, tiny_checkpoint, tmp_path):
    from rsvit.models.clip import TemplateError, UnknownClassesError
    from rsvit.weights import WeightsMismatchError

    config, checkpoint, _ = tiny_checkpoint
    root = str(data_dir / "rsscn7-dev")
    base = ["--checkpoint", str(checkpoint), "--model-config", str(config), "--limit-per-class", "1"]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(TemplateError, match="holds no templates"):
        run_zero_shot(_args(root, *base, "--out", str(tmp_path / "a"), "--templates", str(empty)))
    with pytest.raises(UnknownClassesError, match="not ucm classes"):
        run_zero_shot(_args(root, *base, "--out", str(tmp_path / "b"), "--dataset", "ucm"))
    with pytest.raises(WeightsMismatchError, match="does not fit open_clip 'RN50'"):
        run_zero_shot(
            _args(root, "--checkpoint", str(checkpoint), "--model", "RN50", "--out", str(tmp_path / "c"))
        )
    assert not any((tmp_path / name).exists() for name in "abc")


def _base(tiny_checkpoint, out):
    config, checkpoint, _ = tiny_checkpoint
    return ["--checkpoint", str(checkpoint), "--model-config", str(config), "--out", str(out)]


def _features(model, preprocess, paths):
    from PIL import Image

    images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_image(images), dim=-1).double()


def test_few_shot_cache_adapter_end_to_end(data_dir, tiny_checkpoint, tmp_path):
    from rsvit.models.clip import build_text_classifier, wrap_model

    _, _, model = tiny_checkpoint
    root = data_dir / "rsscn7-dev"
    out = tmp_path / "cache"
    argv = [*_base(tiny_checkpoint, out), "--limit-per-class", "4", "--templates", "skyclip"]
    argv += ["--shots", "2", "--support", str(root), "--alpha", "3", "--beta", "4", "--seed", "1"]
    assert run_zero_shot(_args(str(root), *argv)) == 0
    rows, metrics = _read_outputs(out)
    few = metrics["few_shot"]
    assert (few["method"], few["shots"], few["alpha"], few["beta"]) == ("cache", 2, 3.0, 4.0)
    shots = few["shot_images"]
    assert len(shots) == 14 and [sum(f"/{c}/" in p for p in shots) for c in RSSCN7] == [2] * 7
    # the shots never score themselves: they are left out of the evaluation
    assert not {str(Path(p).resolve()) for p in shots} & {str(Path(r["path"]).resolve()) for r in rows}
    assert len(rows) == 28 - few["shots_left_out_of_evaluation"]
    _check_consistent(rows, metrics, RSSCN7)

    # every prediction follows from the cache-adapter equation, computed here from the listed shots
    clip = wrap_model(model, "rsvit-tiny-clip")
    weights = build_text_classifier(model, clip.tokenizer, metrics["prompt_names"], metrics["templates"])
    keys = _features(model, clip.preprocess, shots)
    values = torch.zeros(14, 7, dtype=torch.float64)
    for i, p in enumerate(shots):
        values[i, next(k for k, c in enumerate(RSSCN7) if f"/{c}/" in p)] = 1.0
    tests = _features(model, clip.preprocess, [r["path"] for r in rows])
    logits = 100.0 * tests @ weights.double().T + 3.0 * torch.exp(-4.0 * (1.0 - tests @ keys.T)) @ values
    assert logits.argmax(dim=1).tolist() == [int(r["prediction"]) for r in rows]
    # the same seed draws the same shots
    again = tmp_path / "again"
    assert run_zero_shot(_args(str(root), *argv[:-1], "1", "--out", str(again))) == 0
    assert _read_outputs(again)[1]["few_shot"]["shot_images"] == shots
    other = tmp_path / "other"
    assert run_zero_shot(_args(str(root), *argv[:-1], "2", "--out", str(other))) == 0
    assert _read_outputs(other)[1]["few_shot"]["shot_images"] != shots


def test_few_shot_probe_saves_a_scene_model(data_dir, tiny_checkpoint, tmp_path):
    from PIL import Image

    from rsvit.models import load_model

    root = data_dir / "rsscn7-dev"
    out = tmp_path / "probe"
    saved = tmp_path / "probe.safetensors"
    argv = [*_base(tiny_checkpoint, out), "--limit-per-class", "2", "--shots", "3", "--support", str(root)]
    argv += ["--few-shot", "probe", "--probe-weight-decay", "1e-4", "--save-model", str(saved)]
    assert run_zero_shot(_args(str(root), *argv)) == 0
    rows, metrics = _read_outputs(out)
    assert metrics["few_shot"]["method"] == "probe" and metrics["few_shot"]["init"] == "text"
    _check_consistent(rows, metrics, RSSCN7)

    scene, spec, meta = load_model(saved)
    assert (spec.task, spec.head, spec.num_classes) == ("classification", "linear", 7)
    assert spec.backbone == "open_clip:rsvit-tiny-clip"
    assert meta.classes == tuple(RSSCN7) and meta.extra["clip"]["few_shot"]["shots"] == 3
    from rsvit.models.clip import wrap_model

    _, _, model = tiny_checkpoint
    preprocess = wrap_model(model, "rsvit-tiny-clip").preprocess
    images = torch.stack([preprocess(Image.open(r["path"]).convert("RGB")) for r in rows])
    with torch.no_grad():
        predicted = scene(images).argmax(dim=1)
    assert predicted.tolist() == [int(r["prediction"]) for r in rows]
    shots = _features(model, preprocess, metrics["few_shot"]["shot_images"]).float()
    labels = [
        next(k for k, c in enumerate(RSSCN7) if f"/{c}/" in p) for p in metrics["few_shot"]["shot_images"]
    ]
    with torch.no_grad():
        fitted = scene.head(shots).argmax(dim=1).tolist()
    assert fitted == labels  # the probe fits its shots

    # the saved file classifies on its own: images (same predictions) and a raster's tiles
    reused = tmp_path / "reused"
    raster = data_dir / "geotiff" / "RGB.byte.tif"
    argv = [str(root), "--classifier", str(saved), "--limit-per-class", "2", "--out", str(reused)]
    assert run_zero_shot(_args(*argv, "--raster", str(raster), "--window", "160", "--scores", "none")) == 0
    reused_rows, reused_metrics = _read_outputs(reused)
    assert reused_metrics["spec"]["head"] == "linear" and len(reused_rows) == 14
    before = {r["path"]: r["prediction"] for r in rows}
    common = [r for r in reused_rows if r["path"] in before]
    assert common and all(r["prediction"] == before[r["path"]] for r in common)
    import rasterio

    with rasterio.open(reused / "tiles.tif") as dst:
        assert json.loads(dst.tags()["CLASSES"]) == RSSCN7
    with pytest.raises(ValueError, match="--shots do not apply"):
        run_zero_shot(_args(*argv[:-1], str(tmp_path / "x"), "--shots", "1"))
    _, checkpoint, _ = tiny_checkpoint
    with pytest.raises(ValueError, match="give the CLIP weights with --checkpoint, or"):
        run_zero_shot(_args(*argv[:-1], str(tmp_path / "x"), "--checkpoint", str(checkpoint)))


def test_raster_tiles_end_to_end(data_dir, tiny_checkpoint, tmp_path, capsys):
    import rasterio

    source = data_dir / "geotiff" / "RGB.byte.tif"
    out = tmp_path / "tiles"
    argv = [*_base(tiny_checkpoint, out), "--raster", str(source), "--window", "128"]
    argv += ["--classes", "aGrass,dRiverLake,fResident", "--dataset", "rsscn7"]
    assert run_zero_shot(_args(*argv)) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".aux.xml")) == sorted(
        ("tiles.tif", "tiles_probabilities.tif", "tiles.json")
    )
    with rasterio.open(source) as src, rasterio.open(out / "tiles.tif") as dst:
        assert (dst.crs, dst.transform, dst.shape, dst.dtypes[0]) == (
            src.crs,
            src.transform,
            src.shape,
            "uint8",
        )
        classes = dst.read(1)
        hole = (src.read() == 0).all(axis=0)
        assert json.loads(dst.tags()["CLASSES"]) == ["aGrass", "dRiverLake", "fResident"]
    with rasterio.open(out / "tiles_probabilities.tif") as probs:
        scores = probs.read()
    assert (classes[hole] == 255).all() and (scores[:, hole] == 255).all()
    np.testing.assert_array_equal(classes[~hole], scores[:, ~hole].argmax(axis=0))
    described = json.loads((out / "tiles.json").read_text())
    assert described["prompt_names"] == ["grass", "river or lake", "residential area"]
    assert (described["window"], described["overlap"]) == (128, 0) and described["few_shot"] is None
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_zero_shot(_args(*argv))

    # few-shot tiles: classes from the support folders, sliding windows
    out2 = tmp_path / "tiles-few"
    argv2 = [*_base(tiny_checkpoint, out2), "--raster", str(source), "--window", "128", "--overlap", "32"]
    argv2 += ["--shots", "1", "--support", str(data_dir / "rsscn7-dev"), "--scores", "none"]
    assert run_zero_shot(_args(*argv2)) == 0
    with rasterio.open(out2 / "tiles.tif") as dst:
        assert json.loads(dst.tags()["CLASSES"]) == RSSCN7
        assert set(np.unique(dst.read(1))) <= set(range(7)) | {255}
    assert not (out2 / "tiles_probabilities.tif").exists()
    assert json.loads((out2 / "tiles.json").read_text())["overlap"] == 32


def test_any_scene_classifier_file_maps_tiles(data_dir, tmp_path):
    import rasterio

    from rsvit.models import ModelSpec, build_model, save_model
    from rsvit.weights import WeightsMetadata

    spec = ModelSpec("classification", "resnet18", num_classes=7)
    torch.manual_seed(0)
    path = tmp_path / "resnet.safetensors"
    meta = WeightsMetadata(
        classes=tuple(RSSCN7), mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2), input_size=(3, 96, 96)
    )
    save_model(path, build_model(spec), spec, meta)
    out = tmp_path / "tiles"
    raster = data_dir / "geotiff" / "RGB.byte.tif"
    argv = [
        str(data_dir / "rsscn7-dev"),
        "--classifier",
        str(path),
        "--raster",
        str(raster),
        "--out",
        str(out),
    ]
    assert run_zero_shot(_args(*argv, "--limit-per-class", "1")) == 0
    rows, metrics = _read_outputs(out)
    _check_consistent(rows, metrics, RSSCN7)
    described = json.loads((out / "tiles.json").read_text())
    assert (described["window"], described["overlap"]) == (96, 0)  # the model's input size: one tile each
    with rasterio.open(out / "tiles.tif") as dst:
        assert set(np.unique(dst.read(1))) <= set(range(7)) | {255}


def test_support_from_a_split_file(data_dir, tiny_checkpoint, tmp_path):
    root = data_dir / "rsscn7-dev"
    listed = {c: sorted((root / c).iterdir())[:3] for c in RSSCN7[:2]}
    evaluate = tmp_path / "valid.txt"
    evaluate.write_text(
        "".join(f"{c}/{images[0].name} {c} {i}\n" for i, (c, images) in enumerate(listed.items()))
    )
    support = tmp_path / "train.txt"  # ids of its own order: matched to the evaluated classes by name
    support.write_text(
        "".join(f"{c}/{p.name} {c} {1 - i}\n" for i, (c, ims) in enumerate(listed.items()) for p in ims[1:])
    )
    out = tmp_path / "run"
    argv = [str(root), *_base(tiny_checkpoint, out), "--split-file", str(evaluate), "--shots", "2"]
    assert run_zero_shot(_args(*argv, "--support", str(support), "--support-root", str(root))) == 0
    rows, metrics = _read_outputs(out)
    assert len(rows) == 2 and metrics["few_shot"]["shots_left_out_of_evaluation"] == 0
    expected = sorted(str(p) for images in listed.values() for p in images[1:])
    assert sorted(metrics["few_shot"]["shot_images"]) == expected
    _check_consistent(rows, metrics, RSSCN7[:2])


def _support_folder(root, folder, counts):
    import shutil

    for name, count in counts.items():
        (folder / name).mkdir(parents=True)
        for image in sorted((root / name).iterdir())[:count]:
            shutil.copy(image, folder / name / image.name)
    return folder


def test_few_shot_bad_inputs(data_dir, tiny_checkpoint, tmp_path):
    from rsvit.models.clip import SupportError

    root = data_dir / "rsscn7-dev"
    split = tmp_path / "split.txt"
    split.write_text(
        "".join(f"{c}/{sorted((root / c).iterdir())[0].name} {c} {i}\n" for i, c in enumerate(RSSCN7[:2]))
    )
    images = ["--split-file", str(split)]

    def run(name, *extra):
        return run_zero_shot(_args(str(root), *_base(tiny_checkpoint, tmp_path / name), *images, *extra))

    small = _support_folder(root, tmp_path / "small", {"aGrass": 3, "bField": 2})
    with pytest.raises(SupportError, match=r"3 shots per class .* fewer images of \{'bField': 2\}"):
        run("a", "--shots", "3", "--support", str(small))
    partial = _support_folder(root, tmp_path / "partial", {"aGrass": 2})
    with pytest.raises(SupportError, match=r"classes without shots: \['bField'\]"):
        run("b", "--shots", "1", "--support", str(partial))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SupportError, match="has no class folders"):
        run("c", "--shots", "1", "--support", str(tmp_path / "empty"))
    (small / "cIndustry").mkdir()
    with pytest.raises(SupportError, match="has no images"):
        run("d", "--shots", "1", "--support", str(small))
    with pytest.raises(ValueError, match="--shots needs --support"):
        run("e", "--shots", "1")
    with pytest.raises(ValueError, match="--support is used with --shots"):
        run("f", "--support", str(small))
    with pytest.raises(ValueError, match="--save-model writes linear classifiers"):
        run("h", "--shots", "1", "--support", str(small), "--save-model", str(tmp_path / "h.safetensors"))
    with pytest.raises(ValueError, match="nothing to classify"):
        run_zero_shot(_args(*_base(tiny_checkpoint, tmp_path / "g")))
    assert not any((tmp_path / name).exists() for name in "abcdefgh")
