"""Safe CLIP loading: architecture recognition from every key manifest, strict loads, wrappers, errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from manifests import manifest_rows, zero_views
from rsvit.models.clip import (
    CLIP_PRESETS,
    RECOGNISED_ARCHITECTURES,
    build_clip,
    clip_state_dict_from_file,
    load_clip,
    recognise_architecture,
)
from rsvit.models.clip.loading import expected_shapes, resolve_model_name
from rsvit.weights import CheckpointFormatError, WeightsMismatchError


@pytest.mark.parametrize("name", RECOGNISED_ARCHITECTURES)
def test_every_manifest_is_recognised(reference_dir, name):
    state_dict = zero_views(manifest_rows(reference_dir, f"open_clip_{name}"))
    assert recognise_architecture(state_dict) == name
    # the meta-device model has exactly the manifest's keys and shapes
    assert expected_shapes(name) == {k: tuple(v.shape) for k, v in state_dict.items()}


def test_quickgelu_variants_share_the_keys():
    assert expected_shapes("ViT-L-14-quickgelu") == expected_shapes("ViT-L-14")


def test_other_architecture_is_refused_with_the_closest(reference_dir):
    state_dict = {k: torch.empty(s, device="meta") for k, s in expected_shapes("ViT-B-16").items()}
    with pytest.raises(WeightsMismatchError, match=r"matches none of .* closest is ViT-B-32.*model=") as err:
        recognise_architecture(state_dict)
    assert "visual.conv1.weight" in str(err.value) or "positional_embedding" in str(err.value)


def test_not_a_clip_state_dict():
    with pytest.raises(CheckpointFormatError, match="not an open_clip CLIP state dict"):
        recognise_architecture({"backbone.conv.weight": torch.zeros(2)})


def _random_weights(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_clip(name).state_dict().items()}


@pytest.fixture(scope="module")
def vit_b_32_weights():
    return _random_weights("ViT-B-32", 1)


def test_rn50_plain_safetensors_loads_strictly(tmp_path):
    weights = _random_weights("RN50", 2)
    path = tmp_path / "RemoteCLIP-RN50.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    clip = load_clip(path)
    assert clip.architecture == "RN50" and clip.source["architecture_from"] == "keys"
    loaded = clip.model.state_dict()
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_skyclip_training_checkpoint_with_module_prefix(tmp_path, vit_b_32_weights):
    # open_clip training checkpoint of a DDP model: {"epoch", "name", "state_dict": {"module.*"}, ...}
    path = tmp_path / "epoch_latest.pt"
    torch.save(
        {
            "epoch": 10,
            "name": "skyclip",
            "state_dict": {f"module.{k}": v.half() for k, v in vit_b_32_weights.items()},
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    state_dict, info = clip_state_dict_from_file(path)
    assert "module.logit_scale" not in state_dict and "logit_scale" in state_dict
    assert info["stripped_prefix"] == "module." and info["source_key"] == "state_dict"
    clip = load_clip(path, model="skyclip-vit-b-32")
    assert clip.architecture == "ViT-B-32" and clip.preset == "skyclip-vit-b-32"
    loaded = clip.model.state_dict()
    assert all(torch.equal(loaded[k], vit_b_32_weights[k].half().float()) for k in vit_b_32_weights)


def test_georsclip_preset_builds_quickgelu(tmp_path, vit_b_32_weights):
    path = tmp_path / "RS5M_ViT-B-32.pt"
    torch.save(vit_b_32_weights, path)
    gelu = load_clip(path, model="auto").model
    quick = load_clip(path, model="georsclip-vit-b-32").model
    assert type(quick.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert type(gelu.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"
    tokens = torch.randint(1, 1000, (1, 77))
    with torch.no_grad():  # same weights, other activation, other embedding (the SPEC's pitfall 1)
        assert not torch.allclose(gelu.encode_text(tokens), quick.encode_text(tokens))


def test_named_architecture_that_does_not_fit(tmp_path, vit_b_32_weights):
    path = tmp_path / "clip.pt"
    torch.save(vit_b_32_weights, path)
    with pytest.raises(WeightsMismatchError, match=r"does not fit open_clip 'RN50'.*those of ViT-B-32"):
        load_clip(path, model="RN50")


def test_mixed_prefix_and_unknown_names(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, path)
    with pytest.raises(CheckpointFormatError, match="mixes two models"):
        clip_state_dict_from_file(path)
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-Z-99'"):
        resolve_model_name("ViT-Z-99")


def test_presets_name_real_architectures():
    for preset in CLIP_PRESETS.values():
        assert resolve_model_name(preset.architecture) == preset.architecture
        assert preset.published


def test_meta_filled_model_equals_a_plainly_built_one(tmp_path):
    # the fast path (meta device + assignment) must give the same network as create_model + load
    from rsvit.models.clip.loading import _create_filled

    torch.manual_seed(3)
    reference = build_clip("RN50")
    filled = _create_filled("RN50", {k: v.clone() for k, v in reference.state_dict().items()}).eval()
    buffers = dict(reference.named_buffers())
    assert all(torch.equal(buffers[k], v) for k, v in filled.named_buffers())
    tokens = torch.randint(1, 1000, (2, 77))
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(reference.encode_text(tokens), filled.encode_text(tokens))
        assert torch.equal(reference.encode_image(images), filled.encode_image(images))


class _Payload:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def test_code_in_a_checkpoint_never_runs(tmp_path, capsys):
    from rsvit.weights import UnsafeCheckpointError

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"logit_scale": torch.zeros(())}, "extra": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.print"):
        load_clip(path)
    assert "code from the checkpoint ran" not in capsys.readouterr().out
