"""``rsvit zero-shot`` end to end on real RSSCN7 images with seeded tiny CLIP weights."""

from __future__ import annotations

import argparse
import csv
import json

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
