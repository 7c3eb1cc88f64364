"""Contracts every registered model keeps, parametrised over the registries.

Backbones (``list_backbones``): NCHW maps matching ``.channels`` / ``.reductions`` on a small input padded
to the deepest stride. Task models (``task_names`` x ``task_heads``): a tiny configuration builds, runs
forward, and comes back from ``save_model`` / ``load_model`` with identical outputs. A newly registered
task model needs its tiny configuration in ``TINY`` below, or the coverage test fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from rsvit.models import ModelSpec, build_model, create_backbone, list_backbones, task_heads, task_names
from rsvit.models.spec import load_model, save_model


def _registered_task_models() -> list[tuple[str, str]]:
    return [(task, head) for task in task_names() for head in task_heads(task)]


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_features_contract(name: str) -> None:
    backbone = create_backbone(name).eval()
    height, width = 40, 56
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, height, width))
    assert isinstance(maps, list) and len(maps) == len(backbone.channels) == len(backbone.reductions)
    stride = backbone.pad_multiple
    padded = (-(-height // stride) * stride, -(-width // stride) * stride)
    for level, (features, channels, reduction) in enumerate(
        zip(maps, backbone.channels, backbone.reductions, strict=True)
    ):
        expected = (1, channels, padded[0] // reduction, padded[1] // reduction)
        assert tuple(features.shape) == expected, (
            f"{name} level {level}: {tuple(features.shape)} != {expected}"
        )
        assert torch.isfinite(features).all()


@dataclass(frozen=True)
class Tiny:
    """A small spec for one registered task model, how many images it takes, and its output shape."""

    spec: dict[str, Any]
    size: int = 64
    images: int = 1
    output: tuple[str, ...] | None = ("batch", "classes", "height", "width")
    # Models whose forward takes more than images (prompts, targets): call it and return one tensor.
    call: Callable[[torch.nn.Module, list[torch.Tensor]], torch.Tensor] | None = None
    batch: int = 2


def _sam_point_prompt(model: torch.nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    points = (torch.tensor([[[20.0, 30.0]]]), torch.tensor([[1]]))
    low_res, _ = model(inputs[0], points=points, multimask_output=True)
    return low_res


def _detections_of_first_image(model: torch.nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    found = model(inputs[0])[0]
    return torch.cat([found["boxes"], found["scores"][:, None], found["labels"][:, None].float()], 1)


TINY: dict[tuple[str, str], Tiny] = {
    ("classification", "linear"): Tiny(
        {"backbone": "resnet18", "num_classes": 3, "in_chans": 4}, 32, 1, ("batch", "classes")
    ),
    ("segmentation", "upernet"): Tiny(
        {"backbone": "resnet18", "num_classes": 3, "head_kwargs": {"channels": 16, "aux_channels": 8}}
    ),
    ("segmentation", "dpt"): Tiny(
        {"backbone": "resnet18", "num_classes": 3, "head_kwargs": {"features": 16}}
    ),
    ("segmentation", "fcn"): Tiny(
        {"backbone": "resnet18", "num_classes": 3, "head_kwargs": {"channels": 16}}
    ),
    ("regression", "dpt"): Tiny(
        {"backbone": "resnet18", "head_kwargs": {"features": 16}}, output=("batch", "height", "width")
    ),
    ("change", "bit"): Tiny({"backbone": "bit_resnet18", "num_classes": 2}, images=2),
    ("promptable", "sam"): Tiny(
        {
            "backbone": "sam_vit_b",
            "head_kwargs": {
                "img_size": 64,
                "encoder_embed_dim": 32,
                "encoder_depth": 2,
                "encoder_num_heads": 2,
                "encoder_window_size": 2,
                "encoder_global_attn_indexes": [1],
                "prompt_embed_dim": 16,
                "mask_in_chans": 4,
                "decoder_num_heads": 2,
                "decoder_mlp_dim": 32,
                "iou_head_hidden_dim": 16,
            },
        },
        output=("batch", "masks", "low_height", "low_width"),
        call=_sam_point_prompt,
        batch=1,
    ),
    ("detection", "oriented_rcnn"): Tiny(
        {
            "backbone": "resnet18",
            "num_classes": 3,
            "head_kwargs": {"fpn_channels": 16, "fc_channels": 32},
        },
        output=None,  # a variable number of (cx, cy, w, h, angle, score, label) rows
        call=_detections_of_first_image,
    ),
}


def test_every_registered_task_model_has_a_tiny_configuration() -> None:
    missing = sorted(set(_registered_task_models()) - set(TINY))
    assert not missing, f"add a tiny configuration to TINY in {__file__} for {missing}"


def _spec_and_inputs(task: str, head: str) -> tuple[ModelSpec, Tiny, list[torch.Tensor]]:
    tiny = TINY[(task, head)]
    spec = ModelSpec.from_dict({"task": task, "head": head, **tiny.spec})
    inputs = [torch.randn(tiny.batch, spec.in_chans, tiny.size, tiny.size) for _ in range(tiny.images)]
    return spec, tiny, inputs


@pytest.mark.parametrize(("task", "head"), _registered_task_models())
def test_task_model_builds_runs_and_round_trips(task: str, head: str, tmp_path) -> None:
    spec, tiny, inputs = _spec_and_inputs(task, head)
    model = build_model(spec).eval()
    run = tiny.call or (lambda net, xs: net(*xs))
    with torch.no_grad():
        out = run(model, inputs)
    sizes = {
        "batch": tiny.batch,
        "classes": spec.num_classes,
        "height": tiny.size,
        "width": tiny.size,
        "masks": 3,
        "low_height": tiny.size // 4,
        "low_width": tiny.size // 4,
    }
    if tiny.output is None:
        assert out.ndim == 2
    else:
        assert tuple(out.shape) == tuple(sizes[d] for d in tiny.output)
    assert torch.isfinite(out).all()

    path = tmp_path / f"{task}-{head}.safetensors"
    save_model(path, model, spec)
    loaded, loaded_spec, metadata = load_model(path)
    assert loaded_spec == spec and metadata.architecture == f"{task}/{spec.backbone}/{head}"
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(run(loaded, inputs), out, rtol=0, atol=0)
