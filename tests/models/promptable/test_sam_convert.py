"""Official SAM checkpoint layouts (vit_b/l/h) load strictly into rsvit models built on the meta device."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from manifests import manifest_rows, zero_views
from rsvit.models.promptable import SAM_VARIANTS, Sam, SamConfig, build_sam, convert_official_sam_state_dict
from rsvit.models.promptable.checkpoint import infer_sam_variant, load_official_sam
from rsvit.models.promptable.convert import official_key, rsvit_key
from rsvit.weights import WeightsMismatchError

PE_BUFFER = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


@pytest.mark.parametrize("variant", sorted(SAM_VARIANTS))
def test_official_layout_loads_strictly(reference_dir: Path, variant: str) -> None:
    rows = manifest_rows(reference_dir, f"sam_{variant}")
    converted = convert_official_sam_state_dict(zero_views(rows))
    with torch.device("meta"):
        model = build_sam(variant)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in converted.items()}
    assert PE_BUFFER in ours and "pixel_mean" not in ours
    model.load_state_dict(converted, strict=True, assign=True)  # views of zeros: nothing is allocated
    assert sum(v.numel() for v in converted.values()) == sum(int(torch.Size(s).numel()) for _, s, _ in rows)


def test_key_mapping_round_trips(reference_dir: Path) -> None:
    keys = [key for key, _, _ in manifest_rows(reference_dir, "sam_vit_b")]
    mapped = [rsvit_key(k) for k in keys]
    assert "image_encoder.trunk.blocks.0.mlp.fc1.weight" in mapped
    assert [official_key(k) for k in mapped] == keys


def test_foreign_keys_are_named() -> None:
    with pytest.raises(WeightsMismatchError, match="sam_mask_decoder"):
        convert_official_sam_state_dict({"sam_mask_decoder.iou_token.weight": torch.zeros(1, 4)})


def test_fixture_weights_carry_the_fourier_matrix(sam_tiny: Sam, sam_official_weights: dict) -> None:
    assert torch.equal(
        sam_tiny.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix, sam_official_weights[PE_BUFFER]
    )


@pytest.mark.parametrize("variant", sorted(SAM_VARIANTS))
def test_variant_is_recognised_from_the_layout(reference_dir: Path, variant: str) -> None:
    assert infer_sam_variant(zero_views(manifest_rows(reference_dir, f"sam_{variant}"))) == variant


def test_checkpoint_of_another_size_is_named(reference_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "sam_vit_l.pth"
    # The entries that tell the size (patch embedding, one norm per block): the whole layout as
    # repeating views would claim more memory than rsvit's reader accepts from such views.
    rows = [
        row
        for row in manifest_rows(reference_dir, "sam_vit_l")
        if row[0] == "image_encoder.patch_embed.proj.weight" or row[0].endswith(".norm1.weight")
    ]
    torch.save(dict(zero_views(rows)), path)
    with pytest.raises(WeightsMismatchError, match="holds a SAM vit_l model, not vit_b"):
        load_official_sam(path, "vit_b")


def test_sam2_checkpoint_is_named(reference_dir: Path) -> None:
    with pytest.raises(WeightsMismatchError, match="SAM 2"):
        infer_sam_variant(zero_views(manifest_rows(reference_dir, "sam2.1_hiera_tiny")))


def test_official_file_loads_with_its_config(
    tmp_path: Path, sam_tiny: Sam, sam_tiny_config: SamConfig, sam_official_weights: dict
) -> None:
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam_official_weights, path)
    model = load_official_sam(path, sam_tiny_config)
    for key, value in sam_tiny.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        load_official_sam(path, replace(sam_tiny_config, prompt_embed_dim=64))
