"""The model runner: batches of windows read ahead, through the model, into the output's sink.

A process runs a contiguous share of strips (:meth:`~rsvit.inference.plan.WindowPlan.shares`): the
windows of those strips (plus the window row above the first one, which overlaps it) are read in batches
by a ``DataLoader``, all-nodata windows are skipped, the rest go through the model, and the output kind's
sink receives every window's result. After each finished strip the sink flushes and, for a resumable run,
the progress is recorded. The same code serves the single-process run and each rank of a multi-process one
(:mod:`~rsvit.inference.distributed`).
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsvit.inference.job import Job
from rsvit.inference.outputs.base import RasterOutput
from rsvit.inference.writer import PartialFiles, write_state

__all__ = [
    "HelperRankDone",
    "ShareRunner",
    "WindowBatches",
    "WindowPredictor",
    "loader_for",
    "rank_files",
    "release_free_heap",
    "remove_rank_files",
    "row_batches",
    "run_share",
    "stats_path",
]


class HelperRankDone(SystemExit):
    """Ends a non-writing rank started as a copy of the command (``ddp``) once its share is written.

    A clean exit (status 0) that must not trigger clean-up: the writer rank is still merging the files.
    """

    def __init__(self) -> None:
        super().__init__(0)


def rank_files(output: Path, rank: int) -> PartialFiles:
    """The partial files of one rank (rank 0 writes the main ones, which receive the merged result)."""
    return PartialFiles(output, tag="" if rank == 0 else f".rank{rank}")


def stats_path(output: Path, rank: int) -> Path:
    """Where a rank leaves its counts for the writer rank."""
    return output.with_name(f".{output.name}.rank{rank}.stats.json")


def remove_rank_files(output: Path, devices: int) -> None:
    """Removes the shares and counts of ranks ``1 .. devices - 1``, if any were written."""
    for rank in range(1, devices):
        rank_files(output, rank).remove()
        stats_path(output, rank).unlink(missing_ok=True)


@functools.cache
def _libc_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


def release_free_heap() -> None:
    """Returns freed heap pages to the system (glibc).

    Window outputs and blend buffers of a few MB each are served from the heap once glibc's adaptive
    mmap threshold has grown; the holes they leave are otherwise kept, and peak RSS then creeps up with
    the number of windows (measured: +24 % from a 2000 to a 20000 px square scene). Trimming after each
    batch keeps it flat at a cost of milliseconds.
    """
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


def row_batches(indices: Sequence[int], n_cols: int, batch_size: int) -> list[list[int]]:
    """``indices`` in run order, cut into batches of at most ``batch_size`` that stay within a window row."""
    batches: list[list[int]] = []
    for index in indices:
        last = batches[-1] if batches else None
        if last is None or len(last) == batch_size or last[0] // n_cols != index // n_cols:
            batches.append([index])
        else:
            last.append(index)
    return batches


class WindowBatches(Dataset):
    """Model-ready batches of windows of the given plan indices, read on demand.

    Each item is a whole batch: windows are read straight into their slot of one preallocated tensor
    per date, so no collate step copies them again. Batches never cross a window row: each row is cut
    into batches from its first window, so a window meets the same batch neighbours whichever strip a run
    starts from. Backends may sum in another order for another batch, so that is what makes a resumed
    run bit-identical to an uninterrupted one.
    """

    def __init__(self, job: Job, indices: Sequence[int]) -> None:
        self.job = job
        self.indices = list(indices)
        self.batches = row_batches(self.indices, job.plan.n_cols, job.batch_size)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        chosen = self.batches[i]
        plan = self.job.plan
        images = [
            torch.empty(len(chosen), len(reader.bands), plan.window_height, plan.window_width)
            for reader in self.job.readers
        ]
        valids: list[np.ndarray | None] = []
        for slot, index in enumerate(chosen):
            win = plan.window(index)
            valid = None
            for reader, batch in zip(self.job.readers, images, strict=True):
                target = batch[slot, :, : win.height, : win.width].numpy()
                _, v = reader.read(win.y0, win.x0, win.height, win.width, out=target)
                if v is not None:
                    valid = v if valid is None else valid & v  # two dates: valid where both are
            valids.append(valid)
        return {
            "index": torch.tensor(chosen),
            "images": images,
            "valid": valids,
            "skip": torch.tensor([v is not None and not bool(v.any()) for v in valids], dtype=torch.bool),
        }


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # masks stay numpy arrays (the default conversion would turn them into tensors)


def loader_for(job: Job, indices: Sequence[int]) -> DataLoader:
    """Batches of the given windows, read by ``job.num_workers`` processes ahead of the model."""
    return DataLoader(
        WindowBatches(job, indices),
        batch_size=None,
        num_workers=job.num_workers,
        shuffle=False,
        collate_fn=_as_is,
    )


class WindowPredictor:
    """Runs the model on a batch of windows (skipping all-nodata ones) and times the pure forward passes."""

    def __init__(self, output: RasterOutput, bf16: bool) -> None:
        self.output = output
        self.bf16 = bf16
        self.model_seconds = 0.0

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> list[Any]:
        """Per window of the batch: the output kind's result, or ``None`` for a skipped window."""
        skip = batch["skip"]
        keep = (~skip).nonzero().flatten()
        outputs: list[Any] = [None] * len(skip)
        if len(keep) == 0:
            return outputs
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        if len(keep) == len(skip):
            images = [x.to(device) for x in batch["images"]]
        else:
            images = [x[keep].to(device) for x in batch["images"]]
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = model(*images)
        results = self.output.split_batch(out, tuple(images[0].shape))
        self.model_seconds += time.perf_counter() - start
        for k, i in enumerate(keep.tolist()):
            outputs[i] = results[k]
        return outputs


class ShareRunner:
    """Hands the results of a contiguous share of strips to the output's sink, strip by strip.

    After each strip of the share it flushes the sink and, if ``record_state``, records the progress for
    ``resume``.
    """

    def __init__(
        self, job: Job, strips: range, files: PartialFiles, create: bool, record_state: bool
    ) -> None:
        self.job = job
        self.strips = strips
        self.files = files
        self.record_state = record_state
        self.sink = job.output.open_share(files, job.grid, job.plan, strips, create)
        self.strips_done = 0

    def consume(self, batch: dict[str, Any], outputs: list[Any]) -> None:
        plan = self.job.plan
        for index, output, valid in zip(batch["index"].tolist(), outputs, batch["valid"], strict=True):
            self.sink.add(index, output, valid)
            row, col = divmod(index, plan.n_cols)
            if col == plan.n_cols - 1 and row in self.strips:
                self.sink.flush()
                if self.record_state:
                    write_state(self.files.state, self.job.fingerprint, row + 1, plan.n_rows)
                self.strips_done += 1
        release_free_heap()

    def close(self) -> None:
        self.sink.close()


def run_share(
    job: Job,
    model: nn.Module,
    predictor: WindowPredictor,
    strips: range,
    files: PartialFiles,
    create: bool,
    progress: bool,
) -> tuple[int, int]:
    """The single-process loop: read, predict and write the windows of ``strips`` in order.

    Returns ``(windows run, windows skipped)``; the progress is recorded for ``resume`` after each strip.
    """
    from tqdm.auto import tqdm

    indices = job.plan.windows_for_strips(strips)
    runner = ShareRunner(job, strips, files, create=create, record_state=True)
    run = skipped = 0
    try:
        with tqdm(
            total=len(indices), unit="win", desc="predict-raster", disable=not progress, leave=False
        ) as bar:
            for batch in loader_for(job, indices):
                outputs = predictor(model, batch)
                runner.consume(batch, outputs)
                n_skip = int(batch["skip"].sum())
                run += len(outputs) - n_skip
                skipped += n_skip
                bar.update(len(outputs))
    finally:
        runner.close()
    return run, skipped
