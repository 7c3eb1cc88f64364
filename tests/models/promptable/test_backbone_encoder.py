"""rsvit backbones as SAM image encoders: shapes, prompting, model-file round trip, bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rsvit.errors import ModelSpecError
from rsvit.inference.promptable import load_promptable_model
from rsvit.models import ModelSpec, build_model, load_model, save_model
from rsvit.models.promptable import Sam, SamImageEncoder
from rsvit.models.promptable.backbone_encoder import BackboneImageEncoder

SIZE = 64
DECODER = {
    "img_size": SIZE,
    "prompt_embed_dim": 16,
    "mask_in_chans": 4,
    "decoder_num_heads": 2,
    "decoder_mlp_dim": 32,
    "iou_head_hidden_dim": 16,
}


def spec_of(backbone: str, **extra: object) -> ModelSpec:
    return ModelSpec.from_dict({"task": "promptable", "backbone": backbone, "head_kwargs": DECODER, **extra})


def prompt(model: Sam, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    points = (torch.tensor([[[20.0, 30.0], [40.0, 10.0]]]), torch.tensor([[1, 0]]))
    return model(image, points=points, multimask_output=True)


@pytest.mark.parametrize("backbone", ["resnet18", "vitaev2_s", "swin_t"])
def test_backbone_encoder_feeds_the_decoder_and_round_trips(backbone: str, tmp_path: Path) -> None:
    spec = spec_of(backbone)
    model = build_model(spec).eval()
    assert isinstance(model, Sam) and isinstance(model.image_encoder, BackboneImageEncoder)
    assert model.image_encoder.backbone.name == backbone
    image = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        embedding = model.image_encoder(image)
        low_res, iou = prompt(model, image[:1])
    assert tuple(embedding.shape) == (2, 16, SIZE // 16, SIZE // 16)
    assert tuple(low_res.shape) == (1, 3, SIZE // 4, SIZE // 4) and tuple(iou.shape) == (1, 3)
    assert torch.isfinite(embedding).all() and torch.isfinite(low_res).all()
    # LayerNorm2d ends the neck: every position is normalised over the channels
    torch.testing.assert_close(embedding.mean(1), torch.zeros(2, SIZE // 16, SIZE // 16), atol=1e-4, rtol=0)

    path = tmp_path / "model.safetensors"
    save_model(path, model, spec)
    loaded, loaded_spec, _ = load_model(path)
    assert loaded_spec == spec
    via_commands = load_promptable_model(path)  # what segment-raster and masks-raster load
    with torch.no_grad():
        torch.testing.assert_close(prompt(loaded, image[:1]), (low_res, iou), rtol=0, atol=0)
        torch.testing.assert_close(prompt(via_commands, image[:1])[0], low_res, rtol=0, atol=0)


def test_neck_reads_stride_8_and_coarser_unless_out_indices_are_given() -> None:
    default = build_model(spec_of("resnet18")).image_encoder
    assert [default.backbone.reductions[i] for i in default.levels] == [8, 16, 32]
    chosen = build_model(spec_of("resnet18", backbone_kwargs={"out_indices": [4]})).image_encoder
    assert chosen.levels == [0] and chosen.backbone.reductions == [32]
    with torch.no_grad():
        assert tuple(chosen(torch.randn(1, 3, SIZE, SIZE)).shape) == (1, 16, 4, 4)


def test_sam_backbones_keep_the_vit_encoder() -> None:
    spec = ModelSpec.from_dict(
        {
            "task": "promptable",
            "backbone": "sam_vit_b",
            "head_kwargs": {
                **DECODER,
                "encoder_embed_dim": 32,
                "encoder_depth": 2,
                "encoder_num_heads": 2,
                "encoder_window_size": 2,
                "encoder_global_attn_indexes": [1],
            },
        }
    )
    assert isinstance(build_model(spec).image_encoder, SamImageEncoder)


def test_more_bands_spread_the_pixel_statistics() -> None:
    model = build_model(spec_of("resnet18", in_chans=4)).eval()
    assert model.pixel_mean.shape == (4, 1, 1) and model.config.in_chans == 4
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.full((4,), (123.675 + 116.28 + 103.53) / 3))
    with torch.no_grad():
        assert tuple(model.image_encoder(torch.randn(1, 4, SIZE, SIZE)).shape) == (1, 16, 4, 4)


def test_bad_specs_and_inputs_are_named() -> None:
    with pytest.raises(ModelSpecError, match=r"encoder_depth.*do not apply"):
        build_model(spec_of("resnet18", head_kwargs={**DECODER, "encoder_depth": 2}))
    with pytest.raises(ModelSpecError, match="unknown head_kwargs"):
        build_model(spec_of("resnet18", head_kwargs={**DECODER, "channels": 8}))
    with pytest.raises(ModelSpecError, match="pixel_mean has 3 values"):
        build_model(spec_of("resnet18", in_chans=4, head_kwargs={**DECODER, "pixel_mean": [1.0, 2.0, 3.0]}))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model(spec_of("not_a_backbone"))
    model = build_model(spec_of("resnet18"))
    with pytest.raises(ValueError, match=f"takes \\(B, C, {SIZE}, {SIZE}\\) input"):
        model.image_encoder(torch.randn(1, 3, 32, 32))
