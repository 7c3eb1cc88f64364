"""Task models register themselves; specs, builds and the old factory names go through the registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import rsvit.models.registry as registry
from rsvit.models import ModelSpec, build_model, register_task_model, task_heads, task_names


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    builders = {task: dict(heads) for task, heads in registry._BUILDERS.items()}
    monkeypatch.setattr(registry, "_BUILDERS", builders)
    monkeypatch.setattr(registry, "_DEFAULT_HEADS", dict(registry._DEFAULT_HEADS))


def test_every_family_of_the_package_is_registered_with_its_default_head_first() -> None:
    assert set(task_names()) >= {"classification", "segmentation", "change", "regression"}
    assert task_heads("segmentation") == ("upernet", "dpt", "fcn")
    assert task_heads("regression") == ("dpt",)
    assert ModelSpec("change", "bit_resnet18").head == "bit"


@pytest.mark.usefixtures("scratch_registry")
def test_a_new_family_needs_only_its_own_registration() -> None:
    @register_task_model("counting", "pool", default=True)
    def _counter(spec: ModelSpec) -> nn.Module:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(spec.in_chans, spec.num_classes)
        )

    spec = ModelSpec.from_dict({"task": "counting", "backbone": "none", "num_classes": 3, "in_chans": 2})
    assert spec.head == "pool"
    assert build_model(spec.to_dict())(torch.zeros(4, 2, 8, 8)).shape == (4, 3)
    assert "counting" in task_names()


@pytest.mark.usefixtures("scratch_registry")
def test_conflicting_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task_model("segmentation", "upernet")(lambda spec: nn.Identity())
    with pytest.raises(ValueError, match="already has the default head 'upernet'"):
        register_task_model("segmentation", "other", default=True)(lambda spec: nn.Identity())
    with pytest.raises(ValueError, match="does not fit task 'regression'; choose one of dpt"):
        registry.model_builder("regression", "upernet")


def test_old_factory_names_warn_and_still_work() -> None:
    import rsvit.models.factory as factory
    from rsvit.models import spec

    with pytest.warns(DeprecationWarning, match=r"rsvit\.models\.spec\.ModelSpec"):
        assert factory.ModelSpec is spec.ModelSpec
    with pytest.warns(DeprecationWarning, match="task_heads"):
        heads = factory.TASK_HEADS
    assert heads["segmentation"] == ("upernet", "dpt", "fcn") and heads["classification"] == ("linear",)


def test_loading_a_model_file_needs_only_rsvit_models_spec(tmp_path) -> None:
    """A model file rebuilds in a fresh process that imported nothing but the spec module."""
    spec = ModelSpec("segmentation", "resnet18", head="fcn", num_classes=2, head_kwargs={"channels": 8})
    from rsvit.models.spec import save_model

    save_model(tmp_path / "m.safetensors", build_model(spec), spec)
    code = (
        "import sys; from rsvit.models.spec import load_model; "
        f"m, s, _ = load_model({str(tmp_path / 'm.safetensors')!r}); print(type(m).__name__, s.head)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Segmentor", "fcn"]
