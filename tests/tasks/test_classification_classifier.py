"""build_classifier: timm networks with rsvit weights, zeroed heads for new class counts."""

from __future__ import annotations

import pytest
import torch

from rsvit.models.classifier import build_classifier, classifier_keys
from rsvit.tasks.classification import ClassificationTask
from rsvit.tasks.optim import weight_decay_groups
from rsvit.weights import WeightsMetadata, WeightsMismatchError, save


def test_builds_named_backbones_with_class_count():
    model = build_classifier("test_resnet", 7)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert classifier_keys(model) == ["fc.weight", "fc.bias"]
    with pytest.raises(ValueError, match="unknown backbone 'no_such_net'"):
        build_classifier("no_such_net", 7)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier("test_resnet", 0)


def test_swin_and_vitaev2_names_resolve_with_drop_path():
    swin = build_classifier("swin_t", 51, drop_path_rate=0.2)
    assert swin.head.fc.out_features == 51
    assert classifier_keys(swin) == ["head.fc.weight", "head.fc.bias"]
    vitae = build_classifier("vitaev2_s", 45)
    assert classifier_keys(vitae) == ["head.weight", "head.bias"]


def test_weights_same_classes_load_exactly_other_classes_zero_the_head(tmp_path):
    source = build_classifier("test_resnet", 51)
    path = save(
        tmp_path / "pretrained.safetensors", source.state_dict(), WeightsMetadata(architecture="test")
    )
    same = build_classifier("test_resnet", 51, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    finetune = build_classifier("test_resnet", 21, weights=path)
    assert torch.equal(finetune.fc.weight, torch.zeros(21, finetune.fc.in_features))
    assert torch.equal(finetune.fc.bias, torch.zeros(21))
    assert torch.equal(finetune.conv1[0].weight, source.conv1[0].weight)


def test_three_band_weights_adapted_to_four_bands(tmp_path):
    source = build_classifier("test_resnet", 5)
    path = save(tmp_path / "w.safetensors", source.state_dict())
    model = build_classifier("test_resnet", 5, in_chans=4, weights=path)
    stem = model.conv1[0].weight
    assert stem.shape[1] == 4
    assert torch.allclose(stem[:, :3], source.conv1[0].weight * 3 / 4)


def test_weights_of_another_architecture_are_refused(tmp_path):
    other = build_classifier("resnet18", 5)
    path = save(tmp_path / "r18.safetensors", other.state_dict())
    with pytest.raises(WeightsMismatchError, match="beyond its classifier"):
        build_classifier("test_resnet", 5, weights=path)


def test_no_weight_decay_on_norms_and_biases():
    model = build_classifier("test_resnet", 3)
    decay, no_decay = weight_decay_groups(model, skip_norms_and_biases=True)
    assert no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"fc.bias", "bn1.weight", "bn1.bias"}
    swin = build_classifier("swin_t", 3)
    _, swin_no_decay = weight_decay_groups(swin, skip_norms_and_biases=True)
    swin_names = {id(p): n for n, p in swin.named_parameters()}
    assert any("relative_position_bias_table" in swin_names[id(p)] for p in swin_no_decay["params"])


def test_rsp_learning_rate_scaling():
    task = ClassificationTask("test_resnet", num_classes=3, batch_size=64)
    assert task.lr_scale() == pytest.approx(64 / 512)
    assert ClassificationTask("test_resnet", num_classes=3, lr_scale_batch=0).lr_scale() == 1.0


def test_rsp_style_pickled_checkpoint_with_model_key(tmp_path):
    source = build_classifier("test_resnet", 51)
    path = tmp_path / "rsp-ckpt.pth"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": state, "epoch": 299, "max_accuracy": 98.99}, path)
    model = build_classifier("test_resnet", 30, weights=path)
    assert torch.equal(model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    assert not model.fc.weight.any()
