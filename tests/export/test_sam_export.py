"""SAM as two graphs (image encoder, prompt decoder) in both formats, checked against eager SAM."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file

from models.promptable.conftest import tiny_config  # the fixture model's config (tests/ is on the path)
from rsvit.cli.export import add_export_arguments, run_export
from rsvit.export import export_model
from rsvit.export.promptable import check_sam, decoder_inputs, load_sam_graph, sam_check_image, sam_paths
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.models.promptable import convert_official_sam_state_dict
from rsvit.weights import WeightsMetadata


def export(*argv) -> int:
    return run_export(add_export_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def sam_file(reference_dir, tmp_path_factory):
    """The tiny official SAM (fixture weights) saved as an rsvit model file."""
    fixtures = reference_dir / "fixtures"
    config = tiny_config(json.loads((fixtures / "sam_tiny_config.json").read_text())).to_dict()
    spec = ModelSpec("promptable", "sam_vit_b", head_kwargs=config)
    model = build_model(spec)
    model.load_state_dict(convert_official_sam_state_dict(load_file(fixtures / "sam_tiny.safetensors")))
    path = tmp_path_factory.mktemp("sam") / "sam.safetensors"
    save_model(path, model.eval(), spec, WeightsMetadata(mean=config["pixel_mean"], std=config["pixel_std"]))
    return path, model.eval()


@pytest.fixture(scope="module", params=["onnx", "exported-program"])
def exported(request, sam_file, data_dir, tmp_path_factory):
    """Both graphs written by `rsvit export` (which checks them on a real crop) in one format."""
    folder = tmp_path_factory.mktemp(request.param)
    source, _ = sam_file
    assert export(source, folder / "sam.onnx", "--format", request.param, "--check-data", data_dir) == 0
    return request.param, folder


def test_two_graphs_match_eager_sam_on_a_real_crop(exported, sam_file, data_dir):
    format, folder = exported
    _, model = sam_file
    paths = sam_paths(folder / "sam.onnx", format)
    suffix = ".onnx" if format == "onnx" else ".pt2"
    assert paths["sam-image-encoder"].name == f"sam.encoder{suffix}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
    roles = {role: load_sam_graph(path)[1] for role, path in paths.items()}
    assert {role: meta.role for role, meta in roles.items()} == {r: r for r in paths}
    assert roles["sam-prompt-decoder"].inputs[1:3] == ("point_coords", "point_labels")
    assert roles["sam-image-encoder"].spec.task == "promptable"
    image = sam_check_image(data_dir, model.img_size)
    assert image.shape[-2:] == (117, 176)  # the 300 x 200 crop, not the traced shape
    results = check_sam(model, paths, image)
    for name, result in results.items():
        assert result.span > 0 and result.ok, f"{name}: {result}"


def test_decoder_takes_any_number_of_prompts_and_points(exported, sam_file):
    format, folder = exported
    _, model = sam_file
    decoder, _ = load_sam_graph(sam_paths(folder / "sam.onnx", format)["sam-prompt-decoder"])
    embedding = torch.randn(1, 32, 11, 11)
    pe = model.prompt_encoder.get_dense_pe()
    for prompts, count in ((1, 1), (5, 4), (7, 12)):
        coords = torch.rand(prompts, count, 2) * 176
        labels = torch.randint(0, 2, (prompts, count))
        masks, iou = decoder(embedding, *decoder_inputs(model, (coords, labels)))
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(points=(coords, labels))
            want, want_iou = model.mask_decoder.predict_all(embedding, pe, sparse, dense)
        assert masks.shape == (prompts, 4, 44, 44)
        torch.testing.assert_close(masks, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(iou, want_iou, atol=1e-5, rtol=1e-4)


def test_window_other_than_img_size_is_refused(sam_file, tmp_path, capsys):
    source, _ = sam_file
    with pytest.raises(ValueError, match=r"--window 64 96 does not apply.*img_size square \(176 x 176\)"):
        export_model(source, tmp_path / "a.onnx", window=(64, 96))
    assert export(source, tmp_path / "b.pt2", "--format", "exported-program", "--window", 128, 128) == 2
    assert "does not apply to a promptable (SAM) model" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--window 256 256 does not apply"):  # the default window too
        export_model(source, tmp_path / "d.onnx", window=(256, 256))
    assert not list(tmp_path.iterdir())
    # the img_size itself is what the export uses anyway
    written = export_model(source, tmp_path / "c.pt2", format="exported-program", window=(176, 176))[1]
    assert {meta.window for meta in written.values()} == {(176, 176)}
