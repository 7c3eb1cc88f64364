"""Scale-out: the same window plan shared between processes (or GPUs) with Lightning.

Lightning launches the processes (``ddp_spawn`` by default, or ``ddp``), places the model on each rank's
device and runs ``predict``. Each rank takes a contiguous share of strips (:meth:`WindowPlan.shares`),
re-running the one window row above its share that it needs for blending, and writes its strips into its
own partial GeoTIFF. When all ranks are done a single writer (the launching process, or rank 0 under
``ddp``) copies the shares into one partial file, from which the engine writes the final maps. Shares of
whole strips make the result identical to a single-process run, and nothing but file names crosses
processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader

from rsvit.inference.job import Job
from rsvit.inference.runner import (
    HelperRankDone,
    ShareRunner,
    WindowPredictor,
    loader_for,
    rank_files,
    stats_path,
)

__all__ = ["HelperRankDone", "RasterPredictionModule", "predict_distributed"]


class RasterPredictionModule(pl.LightningModule):
    """Predicts this rank's share of the plan's strips and writes them to the rank's partial files."""

    def __init__(self, model: nn.Module, job: Job, output: Path) -> None:
        super().__init__()
        self.model = model
        self.job = job
        self.output = output
        self.runner: ShareRunner | None = None
        self.predictor = WindowPredictor(job.output, job.bf16)
        self.counts = [0, 0]  # windows run, windows skipped

    def predict_dataloader(self) -> DataLoader:
        strips = self.job.plan.shares(self.trainer.world_size)[self.global_rank]
        files = rank_files(self.output, self.global_rank)
        files.remove()
        self.runner = ShareRunner(self.job, strips, files, create=True, record_state=False)
        return loader_for(self.job, self.job.plan.windows_for_strips(strips))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        assert self.runner is not None
        outputs = self.predictor(self.model, batch)
        self.runner.consume(batch, outputs)
        skipped = int(batch["skip"].sum())
        self.counts[0] += len(outputs) - skipped
        self.counts[1] += skipped

    def on_predict_end(self) -> None:
        if self.runner is not None:
            self.runner.close()
        stats = {
            "run": self.counts[0],
            "skipped": self.counts[1],
            "model_seconds": self.predictor.model_seconds,
        }
        stats_path(self.output, self.global_rank).write_text(json.dumps(stats))


def predict_distributed(
    job: Job,
    model: nn.Module,
    output: Path,
    *,
    devices: int,
    accelerator: str = "cpu",
    strategy: str = "ddp_spawn",
    progress: bool = True,
) -> tuple[int, int, float]:
    """Runs the plan on ``devices`` processes; returns ``(windows run, skipped, max model seconds)``.

    On return the merged result is in the main partial files of ``output`` (see :class:`PartialFiles`).
    Under ``ddp`` (processes started as copies of the script) only rank 0 gets the merged files; the other
    ranks raise :class:`HelperRankDone` (a ``SystemExit(0)``) after the barrier: they have nothing more to do.
    """
    plan = job.plan
    if plan.n_rows < devices:
        raise ValueError(
            f"the raster has {plan.n_rows} strip(s) of windows, too few for {devices} processes; use at most "
            f"{plan.n_rows} devices or a smaller window"
        )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        default_root_dir=str(output.parent),
    )
    module = RasterPredictionModule(model, job, output)
    trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        raise HelperRankDone()

    shares = plan.shares(devices)
    run = skipped = 0
    model_seconds = 0.0
    for rank in range(devices):
        stats_file = stats_path(output, rank)
        stats = json.loads(stats_file.read_text())
        stats_file.unlink()
        run += stats["run"]
        skipped += stats["skipped"]
        model_seconds = max(model_seconds, stats["model_seconds"])
        if rank == 0:
            continue
        files = rank_files(output, rank)
        rows = (plan.strip_rows(shares[rank].start)[0], plan.strip_rows(shares[rank].stop - 1)[1])
        job.output.merge_share(files, rank_files(output, 0), job.grid, rows)
        files.remove()
    return run, skipped, model_seconds
