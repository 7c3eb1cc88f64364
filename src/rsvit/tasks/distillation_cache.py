"""Teacher outputs kept on disk, so repeated epochs over the same samples skip the teacher.

One safetensors file per sample, under a folder named by the teacher's digest: a changed teacher file
has another digest and so never reads the outputs of the old one. Only valid when a sample id always
means the same input pixels, i.e. for deterministic training transforms (no random crops or flips), such
as the windows and resized images of :mod:`rsvit.datamodules.unlabelled`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from rsvit.utils.atomic import atomic_path

__all__ = ["TeacherCache", "file_digest"]


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TeacherCache:
    """Teacher logits by sample id.

    Args:
        folder: cache root; outputs go to ``folder/<first 16 hex digits of teacher_digest>/``.
        teacher_digest: identifies the teacher (see :func:`file_digest`).
        dtype: the stored precision (float16 halves the files of large outputs such as embeddings).
    """

    def __init__(
        self, folder: str | os.PathLike[str], teacher_digest: str, dtype: torch.dtype = torch.float32
    ) -> None:
        self.folder = Path(folder) / teacher_digest[:16]
        self.dtype = dtype
        self.hits = 0
        self.misses = 0

    def _file(self, sample_id: str) -> Path:
        return self.folder / f"{hashlib.sha1(sample_id.encode()).hexdigest()}.safetensors"

    def get(self, sample_ids: Sequence[str], device: torch.device | None = None) -> Tensor | None:
        """The stacked logits of all ``sample_ids``, or ``None`` when any one is missing."""
        files = [self._file(i) for i in sample_ids]
        if not all(f.is_file() for f in files):
            self.misses += len(files)
            return None
        self.hits += len(files)
        return torch.stack([load_file(f)["logits"] for f in files]).to(device)

    def put(self, sample_ids: Sequence[str], logits: Tensor) -> None:
        """Stores one row of ``logits`` per sample id (atomically)."""
        if len(sample_ids) != logits.shape[0]:
            raise ValueError(f"{len(sample_ids)} sample ids for {logits.shape[0]} outputs")
        self.folder.mkdir(parents=True, exist_ok=True)
        for sample_id, row in zip(sample_ids, logits.detach().to(self.dtype).cpu(), strict=True):
            with atomic_path(self._file(sample_id)) as tmp:
                save_file({"logits": row.contiguous()}, str(tmp))
