"""What a promptable fine-tune trains: frozen parts, the encoder's last blocks, low-rank adapters.

* ``"decoder"``: the mask decoder (and the prompt encoder with ``train_prompt_encoder``); the image encoder
  is frozen and its embeddings computed without a graph.
* ``"last_blocks"``: the decoder plus the last ``num_blocks`` transformer blocks of the image encoder and
  its neck (the neck turns the last block's tokens into the embedding, so it follows them).
* ``"lora"``: the decoder plus low-rank adapters on the ``qkv`` projection of the encoder's attention
  (:class:`LoRALinear`, rank ``r``, scale ``alpha / r``); the encoder's own weights stay frozen. The
  adapters start at zero, so the model starts exactly as loaded; they are merged into plain ``qkv``
  weights for export (:func:`merge_lora`), so an exported model loads without them.
* ``"all"``: everything.

Starting weights are read with :func:`rsvit.weights.read_checkpoint` (safe loading), in either layout: an
rsvit model file or an official ``segment-anything`` checkpoint (renamed on the fly), loaded strictly so
that a checkpoint of another SAM size fails with a message instead of half-loading.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rsvit.models.promptable.convert import convert_official_sam_state_dict
from rsvit.weights import WeightsMismatchError, read_checkpoint

__all__ = [
    "TRAINABLE",
    "LoRALinear",
    "Trainable",
    "add_lora",
    "encoder_blocks",
    "load_sam_weights",
    "merge_lora",
    "set_trainable",
]

Trainable = Literal["decoder", "last_blocks", "lora", "all"]
TRAINABLE = ("decoder", "last_blocks", "lora", "all")


def load_sam_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Loads an rsvit model file or an official SAM checkpoint into ``model``, strictly."""
    state_dict = dict(read_checkpoint(path).state_dict)
    official = any(k.startswith("image_encoder.") for k in state_dict) and not any(
        k.startswith("image_encoder.trunk.") for k in state_dict
    )
    if official:
        state_dict = convert_official_sam_state_dict(state_dict)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:3]
        raise WeightsMismatchError(
            f"{os.fspath(path)} does not fit the configured promptable model (another SAM size, or "
            f"head_kwargs that differ from the checkpoint's): {' '.join(s.strip() for s in first)}"
        ) from exc


def encoder_blocks(model: nn.Module) -> nn.Sequential:
    """The transformer blocks of a SAM image encoder (``image_encoder.trunk.blocks``)."""
    trunk = getattr(getattr(model, "image_encoder", None), "trunk", None)
    blocks = getattr(trunk, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList):
        raise ValueError(
            "trainable='last_blocks' and 'lora' need a ViT image encoder with 'image_encoder.trunk.blocks'; "
            f"this model's encoder is {type(getattr(model, 'image_encoder', None)).__name__}: use "
            "trainable='decoder'"
        )
    return blocks


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T``: a frozen linear layer with a trainable low-rank update.

    ``B`` starts at zero (so the layer starts equal to ``base``) and ``A`` Kaiming-uniform.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function."""
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight += (self.lora_b @ self.lora_a) * self.scale
        out.weight.requires_grad_(False)
        return out


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, blocks: int | None = None) -> int:
    """Wraps the ``attn.qkv`` of the last ``blocks`` encoder blocks (all by default); returns how many."""
    stack = encoder_blocks(model)
    chosen = list(stack)[-blocks:] if blocks else list(stack)
    for block in chosen:
        attn = block.attn
        if isinstance(attn.qkv, LoRALinear):
            raise ValueError("the encoder already has LoRA adapters")
        attn.qkv = LoRALinear(attn.qkv, rank, alpha)
    return len(chosen)


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`LoRALinear` replaced by its merged ``nn.Linear``."""
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent_name) if parent_name else out, child, module.merged())
    return out


def set_trainable(
    model: nn.Module,
    trainable: Trainable,
    num_blocks: int = 2,
    train_prompt_encoder: bool = False,
) -> None:
    """Sets ``requires_grad`` for a fine-tune (see the module docstring); adapters must be added first."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    for p in model.parameters():
        p.requires_grad_(trainable == "all")
    if trainable == "all":
        return
    model.mask_decoder.requires_grad_(True)
    if train_prompt_encoder:
        model.prompt_encoder.requires_grad_(True)
    if trainable == "last_blocks":
        stack = encoder_blocks(model)
        if not 1 <= num_blocks <= len(stack):
            raise ValueError(f"num_blocks must be in 1..{len(stack)} (the encoder's depth), got {num_blocks}")
        for block in list(stack)[-num_blocks:]:
            block.requires_grad_(True)
        neck = getattr(model.image_encoder.trunk, "neck", None)
        if isinstance(neck, nn.Module):
            neck.requires_grad_(True)
    elif trainable == "lora":
        adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
        if not adapters:
            raise ValueError("trainable='lora' but the model has no adapters; call add_lora first")
        for module in adapters:
            module.lora_a.requires_grad_(True)
            module.lora_b.requires_grad_(True)
