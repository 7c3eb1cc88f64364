"""``rsvit repeat``: fit one scene config with N seeds and tabulate mean ± std top-1 (RSP reports 5 runs)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_repeat_arguments", "repeat_runs", "run_repeat"]


def add_repeat_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit repeat``."""
    parser.add_argument("--config", required=True, action="append", help="LightningCLI config (repeatable)")
    parser.add_argument("--seeds", type=int, default=5, help="number of runs (default 5)")
    parser.add_argument("--first-seed", type=int, default=2022, help="seed of the first run (RSP: 2022)")
    parser.add_argument("--out", type=Path, default=None, help="folder for repeat.json / repeat.md")
    parser.add_argument(
        "overrides", nargs="*", help="further LightningCLI arguments, e.g. --trainer.max_epochs=5"
    )
    return parser


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    # Population standard deviation (numpy's default), as RSP's script reports it.
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def repeat_runs(
    configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str] = (), out: Path | None = None
) -> dict[str, Any]:
    """Fits one run per seed (fresh model, weights and optimiser each time) and tabulates top-1.

    RSP repeats on the same split file, so only the training seed changes. Reported per run: the
    last-epoch and the best-epoch validation top-1 (RSP logs both).
    """
    from rsvit.cli.lightning import build_cli
    from rsvit.tasks.reports import MetricsReport, run_dir, write_json, write_text

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        args = [a for c in configs for a in ("--config", str(c))] + [f"--seed_everything={seed}", *overrides]
        cli = build_cli(args, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        report = next(cb for cb in cli.trainer.callbacks if isinstance(cb, MetricsReport))
        last = report.last.get("val") or {}
        best = report.best or {}
        rows.append(
            {
                "seed": seed,
                "run": str(run_dir(cli.trainer)),
                "last_acc1": 100 * float(last.get("acc1", float("nan"))),
                "best_acc1": 100 * float(best.get("acc1", float("nan"))),
                "best_epoch": best.get("epoch"),
            }
        )
        if out is None:
            out = run_dir(cli.trainer).parent
    summary = {
        name: dict(zip(("mean", "std"), _mean_std([r[name] for r in rows]), strict=True))
        for name in ("last_acc1", "best_acc1")
    }
    result = {
        "configs": list(map(str, configs)),
        "overrides": list(overrides),
        "runs": rows,
        "summary": summary,
    }
    assert out is not None
    lines = ["| seed | last top-1 (%) | best top-1 (%) | best epoch | run |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['seed']} | {r['last_acc1']:.2f} | {r['best_acc1']:.2f} | {r['best_epoch']} | {r['run']} |"
        for r in rows
    ]
    lines.append(
        f"| mean ± std | {summary['last_acc1']['mean']:.2f} ± {summary['last_acc1']['std']:.2f} | "
        f"{summary['best_acc1']['mean']:.2f} ± {summary['best_acc1']['std']:.2f} | | |"
    )
    table = "\n".join(lines) + "\n"
    write_json(Path(out) / "repeat.json", result)
    write_text(Path(out) / "repeat.md", table)
    result["table"] = table
    result["out"] = str(out)
    return result


def run_repeat(args: argparse.Namespace) -> int:
    """Runs ``--seeds`` fits and prints the mean ± std table."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = [args.first_seed + i for i in range(args.seeds)]
    result = repeat_runs(args.config, seeds, args.overrides, args.out)
    print(result["table"], end="")
    print(f"written to {result['out']}/repeat.json and repeat.md")
    return 0
