"""The reduced official SAM of ``shared/reference/fixtures/sam_tiny*`` rebuilt in rsvit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rsvit.models.promptable import Sam, SamConfig, build_sam, convert_official_sam_state_dict


def tiny_config(official: dict) -> SamConfig:
    """Our config from the official constructor kwargs stored with the fixture."""
    enc, pe, tw, dec = (
        official[k] for k in ("image_encoder", "prompt_encoder", "two_way_transformer", "mask_decoder")
    )
    return SamConfig(
        img_size=enc["img_size"],
        patch_size=enc["patch_size"],
        in_chans=enc["in_chans"],
        encoder_embed_dim=enc["embed_dim"],
        encoder_depth=enc["depth"],
        encoder_num_heads=enc["num_heads"],
        encoder_window_size=enc["window_size"],
        encoder_global_attn_indexes=tuple(enc["global_attn_indexes"]),
        encoder_mlp_ratio=enc["mlp_ratio"],
        prompt_embed_dim=pe["embed_dim"],
        mask_in_chans=pe["mask_in_chans"],
        decoder_depth=tw["depth"],
        decoder_num_heads=tw["num_heads"],
        decoder_mlp_dim=tw["mlp_dim"],
        attention_downsample_rate=tw["attention_downsample_rate"],
        num_multimask_outputs=dec["num_multimask_outputs"],
        iou_head_depth=dec["iou_head_depth"],
        iou_head_hidden_dim=dec["iou_head_hidden_dim"],
        pixel_mean=tuple(official["sam"]["pixel_mean"]),
        pixel_std=tuple(official["sam"]["pixel_std"]),
        mask_threshold=official["sam"]["mask_threshold"],
    )


@pytest.fixture(scope="session")
def sam_fixture_dir(reference_dir: Path) -> Path:
    return reference_dir / "fixtures"


@pytest.fixture(scope="session")
def sam_official_config(sam_fixture_dir: Path) -> dict:
    return json.loads((sam_fixture_dir / "sam_tiny_config.json").read_text())


@pytest.fixture(scope="session")
def sam_official_weights(sam_fixture_dir: Path) -> dict:
    return load_file(sam_fixture_dir / "sam_tiny.safetensors")


@pytest.fixture(scope="session")
def sam_tiny_config(sam_official_config: dict) -> SamConfig:
    return tiny_config(sam_official_config)


@pytest.fixture(scope="session")
def sam_tiny(sam_tiny_config: SamConfig, sam_official_weights: dict) -> Sam:
    model = build_sam(sam_tiny_config)
    model.load_state_dict(convert_official_sam_state_dict(sam_official_weights), strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def sam_io(sam_fixture_dir: Path) -> dict:
    return load_file(sam_fixture_dir / "sam_tiny_io.safetensors")


@pytest.fixture(scope="session")
def sam_amg_io(sam_fixture_dir: Path) -> dict:
    return load_file(sam_fixture_dir / "sam_tiny_amg_io.safetensors")
