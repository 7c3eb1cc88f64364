"""The SAM model against the official code on the ``sam_tiny`` fixture (README tolerances)."""

from __future__ import annotations

import pytest
import torch

from rsvit.models.promptable import Sam, build_sam

CASES = ("point1", "points_fg_bg", "box", "box_points", "mask_prompt", "mask_only", "no_prompt")


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _probe_encoder(model: Sam, image: torch.Tensor) -> dict[str, torch.Tensor]:
    trunk = model.image_encoder.trunk
    probes: dict[str, torch.Tensor] = {}
    hooks = [
        trunk.patch_embed.register_forward_hook(lambda m, i, o: probes.__setitem__("encoder/patch_embed", o))
    ]
    for i, block in enumerate(trunk.blocks):
        hooks.append(
            block.register_forward_hook(lambda m, i_, o, i=i: probes.__setitem__(f"encoder/block{i}", o))
        )
    for i in range(3):
        hooks.append(
            trunk.neck[i].register_forward_hook(
                lambda m, i_, o, i=i: probes.__setitem__(f"encoder/neck{i}", o)
            )
        )
    with torch.no_grad():
        probes["image_embedding"] = model.image_encoder(image)
    for hook in hooks:
        hook.remove()
    return probes


def test_image_encoder_matches_official(sam_tiny: Sam, sam_io: dict) -> None:
    probes = _probe_encoder(sam_tiny, sam_io["input_image"])
    assert len(probes) == 9
    for name, value in probes.items():
        assert _max_abs(value, sam_io[name]) <= 1e-5, name


def test_encoder_rejects_unpadded_input(sam_tiny: Sam) -> None:
    with pytest.raises(ValueError, match="pad"):
        sam_tiny.image_encoder(torch.zeros(1, 3, 160, 176))


def test_dense_pe_matches_official(sam_tiny: Sam, sam_io: dict) -> None:
    assert _max_abs(sam_tiny.prompt_encoder.get_dense_pe(), sam_io["dense_pe"]) <= 1e-6


def _prompts(io: dict, case: str) -> dict:
    points = None
    if f"{case}/point_coords_input" in io:
        labels = io[f"{case}/point_labels"][None].to(torch.int32)
        points = (io[f"{case}/point_coords_input"], labels)
    boxes = io.get(f"{case}/box_input")
    masks = io[f"{case}/mask_input"][None] if f"{case}/mask_input" in io else None
    return {"points": points, "boxes": boxes, "masks": masks}


@pytest.mark.parametrize("case", CASES)
def test_prompt_encoder_matches_official(sam_tiny: Sam, sam_io: dict, case: str) -> None:
    with torch.no_grad():
        sparse, dense = sam_tiny.prompt_encoder(**_prompts(sam_io, case))
    assert _max_abs(sparse, sam_io[f"{case}/sparse"]) <= 1e-5
    assert _max_abs(dense, sam_io[f"{case}/dense"]) <= 1e-4


def test_padding_point_only_without_box(sam_tiny: Sam) -> None:
    coords = torch.tensor([[[10.0, 20.0]]])
    labels = torch.ones(1, 1, dtype=torch.int32)
    box = torch.tensor([[5.0, 5.0, 50.0, 60.0]])
    with torch.no_grad():
        only_points, _ = sam_tiny.prompt_encoder(points=(coords, labels))
        with_box, _ = sam_tiny.prompt_encoder(points=(coords, labels), boxes=box)
    assert only_points.shape[1] == 2
    torch.testing.assert_close(only_points[0, 1], sam_tiny.prompt_encoder.not_a_point_embed.weight[0])
    assert with_box.shape[1] == 3


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("multimask", [True, False], ids=["mm1", "mm0"])
def test_mask_decoder_matches_official(sam_tiny: Sam, sam_io: dict, case: str, multimask: bool) -> None:
    tag = f"{case}/mm{int(multimask)}"
    with torch.no_grad():
        low_res, iou = sam_tiny.mask_decoder(
            sam_io["image_embedding"],
            sam_tiny.prompt_encoder.get_dense_pe(),
            sam_io[f"{case}/sparse"],
            sam_io[f"{case}/dense"],
            multimask,
        )
    assert _max_abs(low_res[0], sam_io[f"{tag}/low_res_logits"]) <= 2e-4
    assert _max_abs(iou[0], sam_io[f"{tag}/iou_predictions"]) <= 5e-6


@pytest.mark.parametrize("multimask", [True, False], ids=["mm1", "mm0"])
def test_whole_model_on_batched_boxes(sam_tiny: Sam, sam_io: dict, multimask: bool) -> None:
    tag = f"boxes_batch/mm{int(multimask)}"
    with torch.no_grad():
        low_res, iou = sam_tiny(
            sam_io["input_image"], boxes=sam_io["boxes_batch/boxes_input"], multimask_output=multimask
        )
    assert low_res.shape == sam_io[f"{tag}/low_res_logits"].shape
    assert _max_abs(low_res, sam_io[f"{tag}/low_res_logits"]) <= 2e-4
    assert _max_abs(iou, sam_io[f"{tag}/iou_predictions"]) <= 5e-6


def test_unknown_variant_is_named() -> None:
    with pytest.raises(ValueError, match="vit_b"):
        build_sam("vit_x")


def test_wrong_band_count_is_named(sam_tiny: Sam) -> None:
    with pytest.raises(ValueError, match="3 bands, the image has 4"):
        sam_tiny.preprocess(torch.zeros(1, 4, 100, 176))


def test_overrides_and_gradients(sam_tiny_config) -> None:
    model = build_sam(sam_tiny_config, img_size=96, decoder_depth=1).train()
    assert model.config.img_size == 96 and len(model.mask_decoder.transformer.layers) == 1
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0]])
    low_res, iou = model(torch.randn(1, 3, 96, 96), boxes=boxes, multimask_output=False)
    assert low_res.shape == (1, 1, 24, 24) and iou.shape == (1, 1)
    (low_res.mean() + iou.sum()).backward()
    assert model.mask_decoder.mask_tokens.weight.grad is not None
    assert model.image_encoder.trunk.patch_embed.proj.weight.grad is not None


def test_encoder_layer_norms_use_the_official_eps(sam_tiny: Sam) -> None:
    # timm's samvit_* entry points keep nn.LayerNorm's 1e-5; on the fixture that moves the embedding by ~5e-4.
    norms = [m for m in sam_tiny.image_encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 4 + 2
    assert {m.eps for m in norms} == {1e-6}
