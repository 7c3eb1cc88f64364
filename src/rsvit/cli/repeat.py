"""``rsvit repeat``: fit one config with N seeds and tabulate mean ± std of a validation metric.

RSP reports 5 runs of each scene classifier; the same table serves every family. Each run's report
(``metrics.json``, written by the task's :class:`~rsvit.tasks.reports.RunReport`) is read back, and one
metric is tabulated: by default the report's own ``monitor`` (top-1 for scene classification, mIoU for
segmentation, F1 for change detection, mAP for detection, agreement for distillation ...), else the one
``--metric`` names. Nested entries are named with ``/`` (``relative/abs_rel`` of height regression).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "add_repeat_arguments",
    "available_metrics",
    "repeat_runs",
    "run_repeat",
    "tabulate_runs",
]

# Report fields that are no metric of their own (positions, or bulky per-class tables).
_NOT_METRICS = ("epoch", "step", "per_class", "confusion")
_PERCENT_LABELS = {"acc1": "top-1", "acc5": "top-5"}  # scene classification's accuracies, shown in %


def add_repeat_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``rsvit repeat``."""
    parser.add_argument("--config", required=True, action="append", help="LightningCLI config (repeatable)")
    parser.add_argument("--seeds", type=int, default=5, help="number of runs (default 5)")
    parser.add_argument("--first-seed", type=int, default=2022, help="seed of the first run (RSP: 2022)")
    parser.add_argument("--out", type=Path, default=None, help="folder for repeat.json / repeat.md")
    parser.add_argument(
        "--metric",
        default=None,
        help="validation metric to tabulate (default: the run report's monitor, e.g. acc1, mIoU, F1, mAP, "
        "agreement); nested entries as relative/abs_rel",
    )
    parser.add_argument(
        "overrides", nargs="*", help="further LightningCLI arguments, e.g. --trainer.max_epochs=5"
    )
    return parser


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    # Population standard deviation (numpy's default), as RSP's script reports it.
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def available_metrics(entry: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """The numeric metrics of one report entry, nested dicts flattened with ``/`` names."""
    found: dict[str, float] = {}
    for key, value in (entry or {}).items():
        if not prefix and key in _NOT_METRICS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(available_metrics(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def _read_report(run: Path, filename: str) -> dict[str, Any]:
    path = Path(run) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} was not written: the config needs a run report (the task's default report callback)"
        )
    return json.loads(path.read_text())


def _check_metric(report: Mapping[str, Any], metric: str, path: Path) -> None:
    last = report.get("val")
    if not last:
        raise ValueError(
            f"{path} holds no validation: the run must validate at least once (check "
            "trainer.limit_val_batches, trainer.val_check_interval and the data's validation split)"
        )
    names = available_metrics(last)
    if metric not in names:
        raise ValueError(
            f"metric {metric!r} is not in {path}; this task reports {', '.join(sorted(names))}: "
            "pass one of them with --metric"
        )


def tabulate_runs(
    runs: Sequence[tuple[int, str | Path]],
    metric: str,
    filename: str = "metrics.json",
    best_key: str = "step",
    percent: bool | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], str]:
    """Rows, mean ± std summary and Markdown table of ``metric`` over finished runs ``(seed, folder)``.

    Per run: the metric at the last validation and at the report's best validation (the one its monitor
    ranks best) and that validation's ``best_key`` (``epoch`` or ``step``). ``percent`` shows the values
    x100 (default: for ``acc1`` / ``acc5``, scene classification's accuracies).

    Raises:
        ValueError: a run without validation, or without ``metric`` (the message lists the metrics it has).
    """
    percent = metric in _PERCENT_LABELS if percent is None else percent
    scale = 100.0 if percent else 1.0
    last_key, best_name, at_key = f"last_{metric}", f"best_{metric}", f"best_{best_key}"
    rows: list[dict[str, Any]] = []
    for seed, run in runs:
        report = _read_report(Path(run), filename)
        _check_metric(report, metric, Path(run) / filename)
        best = report.get("best_val") or {}
        rows.append(
            {
                "seed": seed,
                "run": str(run),
                last_key: scale * available_metrics(report["val"])[metric],
                best_name: scale * available_metrics(best).get(metric, math.nan),
                at_key: best.get(best_key),
            }
        )
    summary = {
        name: dict(zip(("mean", "std"), _mean_std([r[name] for r in rows]), strict=True))
        for name in (last_key, best_name)
    }
    label = _PERCENT_LABELS.get(metric, metric) + (" (%)" if percent else "")
    digits = 2 if percent else 4
    lines = [f"| seed | last {label} | best {label} | best {best_key} | run |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['seed']} | {r[last_key]:.{digits}f} | {r[best_name]:.{digits}f} | {r[at_key]} | {r['run']} |"
        for r in rows
    ]
    last, best = summary[last_key], summary[best_name]
    lines.append(
        f"| mean ± std | {last['mean']:.{digits}f} ± {last['std']:.{digits}f} | "
        f"{best['mean']:.{digits}f} ± {best['std']:.{digits}f} | | |"
    )
    return rows, summary, "\n".join(lines) + "\n"


def repeat_runs(
    configs: Sequence[str],
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    out: Path | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Fits one run per seed (fresh model, weights and optimiser each time) and tabulates ``metric``.

    RSP repeats on the same split file, so only the training seed changes. ``metric`` defaults to the
    run report's monitor; a metric the run does not report stops the repeat after the first run, with
    the names it does report.
    """
    from rsvit.cli.lightning import build_cli
    from rsvit.tasks.reports import RunReport, run_dir, write_json, write_text

    runs: list[tuple[int, Path]] = []
    filename, best_key = "metrics.json", "step"
    for seed in seeds:
        args = [a for c in configs for a in ("--config", str(c))] + [f"--seed_everything={seed}", *overrides]
        cli = build_cli(args, run=False)
        report = next((cb for cb in cli.trainer.callbacks if isinstance(cb, RunReport)), None)
        if report is None:
            raise ValueError(
                f"{', '.join(map(str, configs))} gives the trainer no run report (metrics.json) to tabulate: "
                "use a config of an rsvit task"
            )
        metric = metric or report.monitor
        filename, best_key = report.filename, report.history_key
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        folder = run_dir(cli.trainer)
        _check_metric(_read_report(folder, filename), metric, folder / filename)  # before the next seeds
        runs.append((seed, folder))
        if out is None:
            out = folder.parent
    assert metric is not None and out is not None
    rows, summary, table = tabulate_runs(runs, metric, filename, best_key)
    result = {
        "configs": list(map(str, configs)),
        "overrides": list(overrides),
        "metric": metric,
        "runs": rows,
        "summary": summary,
    }
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
    result = repeat_runs(args.config, seeds, args.overrides, args.out, getattr(args, "metric", None))
    print(result["table"], end="")
    print(f"written to {result['out']}/repeat.json and repeat.md")
    return 0
