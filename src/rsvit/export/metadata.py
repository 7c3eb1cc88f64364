"""rsvit's description of an exported model, stored inside the exported file.

Raster commands run an exported model alone, so the file must say what network it holds (the
:class:`~rsvit.models.ModelSpec`), what it expects (bands, mean/std, window) and what its outputs mean
(classes, palette). It is one JSON document under the key :data:`METADATA_KEY`: an ONNX
``metadata_props`` entry, or an extra file of the ExportedProgram archive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rsvit.export.errors import MissingMetadataError
from rsvit.models import ModelSpec
from rsvit.weights import WeightsMetadata

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "ROLES", "ExportMetadata", "input_names", "output_names"]

METADATA_KEY = "rsvit"
FORMAT_VERSION = 1


ROLES = ("model", "sam-image-encoder", "sam-prompt-decoder")

_ROLE_INPUTS = {
    "sam-image-encoder": ("image",),
    "sam-prompt-decoder": (
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
    ),
}
_ROLE_OUTPUTS = {
    "sam-image-encoder": ("image_embeddings",),
    "sam-prompt-decoder": ("low_res_masks", "iou_predictions"),
}


def input_names(task: str, role: str = "model") -> tuple[str, ...]:
    """Graph input names: change models take two dates, SAM graphs their own, other tasks one image."""
    if role in _ROLE_INPUTS:
        return _ROLE_INPUTS[role]
    return ("image_a", "image_b") if task == "change" else ("image",)


def output_names(task: str, role: str = "model") -> tuple[str, ...]:
    """Names of an exported graph's outputs for a task family (and, for SAM, the graph's role)."""
    if role in _ROLE_OUTPUTS:
        return _ROLE_OUTPUTS[role]
    if task == "detection":
        return ("boxes", "scores", "labels")
    return ("height",) if task == "regression" else ("logits",)


@dataclass
class ExportMetadata:
    """What an exported graph is and how to feed it.

    Args:
        spec: the network the graph was traced from.
        weights: preprocessing and label metadata of the source model file (mean/std, bands, classes,
            palette in ``extra``).
        window: ``(height, width)`` the graph was traced at; the only size it accepts when
            ``dynamic_spatial`` is false.
        dynamic_batch: whether any batch size is accepted.
        dynamic_spatial: whether other spatial sizes are accepted.
        static_reason: why the spatial size is fixed, when it is.
        size_multiple: when set, a dynamic graph holds only at heights and widths that are multiples of it
            (verified at two such sizes; a size in between gives wrong outputs, so runners refuse it).
        exporter: ``dynamo`` / ``torchscript`` (ONNX) or ``torch.export``.
        quantization: ``None`` for float graphs, ``int8-dynamic`` for quantised ones.
        role: what the graph does: ``model`` (the whole model), or for SAM, which is exported as two graphs,
            ``sam-image-encoder`` (image -> embedding) or ``sam-prompt-decoder`` (embedding + prompts ->
            masks, IoU).
        selection: for a detector graph that stops before the per-class rotated NMS (ONNX), the settings
            of that last step, which the runner applies: ``score_thr``, ``nms_thr``, ``max_per_img`` and
            ``min_side`` of :class:`~rsvit.models.detection.RCNNTestConfig`. ``None`` for graphs that
            return final outputs.
    """

    spec: ModelSpec
    weights: WeightsMetadata
    window: tuple[int, int]
    dynamic_batch: bool = True
    dynamic_spatial: bool = True
    static_reason: str | None = None
    size_multiple: int | None = None
    exporter: str = "dynamo"
    quantization: str | None = None
    inputs: tuple[str, ...] = field(default=())
    outputs: tuple[str, ...] = field(default=())
    role: str = "model"
    selection: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown graph role {self.role!r}; one of {', '.join(ROLES)}")
        self.window = (int(self.window[0]), int(self.window[1]))
        self.inputs = tuple(self.inputs) or input_names(self.spec.task, self.role)
        self.outputs = tuple(self.outputs) or output_names(self.spec.task, self.role)

    def with_changes(self, **changes: Any) -> ExportMetadata:
        return replace(self, **changes)

    def to_json(self) -> str:
        data = {
            "format_version": FORMAT_VERSION,
            "model_spec": self.spec.to_dict(),
            "weights": asdict(self.weights),
            "window": list(self.window),
            "dynamic_batch": self.dynamic_batch,
            "dynamic_spatial": self.dynamic_spatial,
            "static_reason": self.static_reason,
            "size_multiple": self.size_multiple,
            "exporter": self.exporter,
            "quantization": self.quantization,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "role": self.role,
            "selection": self.selection,
        }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, source: str = "the file") -> ExportMetadata:
        """Parses the stored JSON; a missing or foreign entry raises :class:`MissingMetadataError`."""
        if not text:
            raise MissingMetadataError(
                f"{source} has no rsvit metadata (no '{METADATA_KEY}' entry): it was not written by "
                "`rsvit export`. Export the model with `rsvit export MODEL OUT` so the file carries its "
                "model spec, bands, mean/std and classes"
            )
        try:
            data = json.loads(text)
            version = data["format_version"]
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise MissingMetadataError(f"{source}: the '{METADATA_KEY}' entry is not rsvit metadata") from err
        if version > FORMAT_VERSION:
            raise MissingMetadataError(
                f"{source} was written by a newer rsvit (metadata format {version}, this one reads "
                f"{FORMAT_VERSION}); upgrade rsvit"
            )
        return cls(
            spec=ModelSpec.from_dict(data["model_spec"]),
            weights=WeightsMetadata(**data["weights"]),
            window=tuple(data["window"]),
            dynamic_batch=bool(data["dynamic_batch"]),
            dynamic_spatial=bool(data["dynamic_spatial"]),
            static_reason=data.get("static_reason"),
            size_multiple=data.get("size_multiple"),
            exporter=data["exporter"],
            quantization=data.get("quantization"),
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            role=data.get("role", "model"),
            selection=data.get("selection"),
        )
