"""Throughput of backbones on this machine: forward pass and training step, fp32 and bf16 autocast.

Absolute images per second swing with whatever else the machine is doing, so models are timed in
interleaved rounds and compared through the median of their per-round ratios to a baseline timed in
the same rounds: a slow drift of the machine's speed then hits every model alike.

    rsvit benchmark --models vitaev2_s swin_t resnet50 --baseline swin_t

A distillation teacher and its student (:mod:`rsvit.benchmark_distillation`) are compared the same way:

    rsvit benchmark --teacher runs/teacher/model.safetensors --student runs/student/model.safetensors
    rsvit benchmark --config configs/distillation/rsscn7_quick.yaml
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rsvit.cli.benchmark_args import JOBS, add_benchmark_arguments

__all__ = [
    "JOBS",
    "Inputs",
    "Throughput",
    "add_benchmark_arguments",
    "configure_torch",
    "make_jobs",
    "measure",
    "measure_with_args",
    "median_seconds",
    "run_benchmark",
    "run_teacher_student",
    "time_models",
]

NUM_CLASSES = 51  # the MillionAID head of the RSP models; the head's cost is negligible either way


def median_seconds(fn: Callable[[], object], iters: int) -> float:
    """Median seconds of ``iters`` calls after one untimed call (allocations, oneDNN primitive set-up)."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Inputs:
    """What the timed models take: ``images`` tensors (2 for change detection) of ``in_chans`` bands."""

    in_chans: int = 3
    images: int = 1


def make_jobs(
    model: nn.Module,
    batch_size: int,
    size: int,
    channels_last: bool = False,
    jobs: Sequence[str] = JOBS,
    inputs: Inputs = Inputs(),
) -> dict[str, Callable[[], None]]:
    """The timed jobs of one model on random ``batch_size x in_chans x size x size`` images.

    A training step is forward, cross-entropy, backward and an AdamW step, as a fine-tuning run does;
    the random labels take the shape of the logits (one per image, or per pixel for dense models).
    """
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise ValueError(f"unknown benchmark jobs {unknown}; choose from {list(JOBS)}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = [
        torch.randn(batch_size, inputs.in_chans, size, size).contiguous(memory_format=fmt)
        for _ in range(inputs.images)
    ]
    labels: list[torch.Tensor] = []  # drawn at the first step, from the shape of the logits
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    out: dict[str, Callable[[], None]] = {}
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

        def forward(ctx=ctx) -> None:
            model.eval()
            with torch.inference_mode(), ctx():
                model(*x)

        def step(ctx=ctx) -> None:
            model.train()
            with ctx():
                logits = model(*x)
                if not labels:
                    shape = (logits.shape[0], *logits.shape[2:])
                    labels.append(torch.randint(0, logits.shape[1], shape, device=logits.device))
                loss = F.cross_entropy(logits, labels[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[f"fwd {precision}"] = forward
        out[f"train {precision}"] = step
    return {job: out[job] for job in JOBS if job in jobs}


@dataclass
class Throughput:
    """Images per second of every model and job, one figure per round."""

    rates: dict[str, dict[str, list[float]]]
    baseline: str

    def median(self, model: str, job: str) -> float:
        return statistics.median(self.rates[model][job])

    def spread(self, model: str, job: str) -> tuple[float, float]:
        """Slowest and fastest round of ``model`` at ``job``, in images per second."""
        return min(self.rates[model][job]), max(self.rates[model][job])

    def round_ratios(
        self, model: str, job: str, base_job: str | None = None, base: str | None = None
    ) -> list[float]:
        """Per round, ``model``'s speed at ``job`` over ``base``'s at ``base_job`` (see :meth:`ratio`)."""
        ours = self.rates[model][job]
        theirs = self.rates[base or self.baseline][base_job or job]
        return [a / b for a, b in zip(ours, theirs, strict=True)]

    def ratio(self, model: str, job: str, base_job: str | None = None, base: str | None = None) -> float:
        """Median over rounds of ``model``'s speed at ``job`` over ``base``'s at ``base_job``.

        ``base`` defaults to the baseline model, ``base_job`` to the same job.
        """
        return statistics.median(self.round_ratios(model, job, base_job, base))

    def table(self) -> str:
        jobs = [j for j in JOBS if j in self.rates[self.baseline]]
        ratio_jobs = [j for j in ("fwd fp32", "train fp32") if j in jobs]
        width = max(12, *(len(m) + 2 for m in self.rates))
        lines = [
            f"{'img/s':<{width}}"
            + "".join(f"{j:>12}" for j in jobs)
            + (f"   ratio to {self.baseline} ({', '.join(ratio_jobs)})" if ratio_jobs else "")
        ]
        for model in self.rates:
            ratios = ", ".join(f"{self.ratio(model, j):.2f}x" for j in ratio_jobs)
            lines.append(
                f"{model:<{width}}"
                + "".join(f"{self.median(model, j):>12.2f}" for j in jobs)
                + (f"   {ratios}" if ratios else "")
            )
        return "\n".join(lines)

    def comparison(self, model: str) -> str:
        """``model`` against the baseline, per job: img/s as median (slowest-fastest round), and the ratio.

        The ratio row is the median per-round speed ratio with its range over the rounds.
        """
        jobs = [j for j in JOBS if j in self.rates[self.baseline]]
        names = [self.baseline, model]
        ratio_name = f"{model}/{self.baseline}"
        width = max(12, *(len(n) + 2 for n in [*names, ratio_name]))
        cells: dict[str, list[str]] = {name: [] for name in [*names, ratio_name]}
        for job in jobs:
            for name in names:
                low, high = self.spread(name, job)
                cells[name].append(f"{self.median(name, job):.2f} ({low:.2f}-{high:.2f})")
            ratios = self.round_ratios(model, job)
            cells[ratio_name].append(
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            )
        column = max(len(c) for row in cells.values() for c in row) + 3
        lines = [f"{'img/s':<{width}}" + "".join(f"{j:>{column}}" for j in jobs)]
        lines += [f"{name:<{width}}" + "".join(f"{c:>{column}}" for c in row) for name, row in cells.items()]
        return "\n".join(lines)


def measure(
    factories: Mapping[str, Callable[[], nn.Module]],
    baseline: str,
    batch_size: int = 8,
    size: int = 224,
    rounds: int = 3,
    iters: int = 3,
    channels_last: bool = False,
    jobs: Sequence[str] = JOBS,
    progress: Callable[[str], None] | None = None,
    inputs: Inputs = Inputs(),
) -> Throughput:
    """Times every model's jobs in ``rounds`` interleaved rounds.

    Forward passes are timed ``iters`` times per round, training steps ``max(2, iters // 2)`` times
    (they take three times as long); each figure is the median of its timings. ``progress`` hears of
    every model done: ``"warm-up NAME"``, then ``"round R/ROUNDS NAME"``. Every model takes ``inputs``.
    """
    if baseline not in factories:
        raise ValueError(f"the baseline {baseline!r} is not among the models {list(factories)}")
    for name, value in (("batch_size", batch_size), ("size", size), ("rounds", rounds), ("iters", iters)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    # The baseline runs first in every round, the others in the given order.
    order = [baseline, *[m for m in factories if m != baseline]]
    work = {m: make_jobs(factories[m](), batch_size, size, channels_last, jobs, inputs) for m in order}
    rates: dict[str, dict[str, list[float]]] = {m: {j: [] for j in work[m]} for m in order}
    # One untimed pass over everything first: the process's heap then has grown to its working size,
    # so the first model of round 1 does not pay the page faults the others are spared.
    report = progress or (lambda message: None)
    for model in order:
        for fn in work[model].values():
            fn()
        report(f"warm-up {model}")
    for r in range(rounds):
        for model in order:
            for job, fn in work[model].items():
                n = iters if job.startswith("fwd") else max(2, iters // 2)
                rates[model][job].append(batch_size / median_seconds(fn, n))
            report(f"round {r + 1}/{rounds} {model}")
    return Throughput(rates, baseline)


def configure_torch(args: argparse.Namespace) -> None:
    """Threads and denormal flushing as :func:`add_benchmark_arguments` asked for."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)


def measure_with_args(
    factories: Mapping[str, Callable[[], nn.Module]],
    baseline: str,
    args: argparse.Namespace,
    progress: Callable[[str], None] | None = None,
    inputs: Inputs = Inputs(),
) -> Throughput:
    """:func:`measure` with the settings of :func:`add_benchmark_arguments`."""
    return measure(
        factories,
        baseline,
        batch_size=args.batch_size,
        size=args.size,
        rounds=args.rounds,
        iters=args.iters,
        channels_last=args.channels_last,
        jobs=args.jobs,
        progress=progress,
        inputs=inputs,
    )


def time_models(
    factories: Mapping[str, Callable[[], nn.Module]],
    baseline: str,
    args: argparse.Namespace,
    inputs: Inputs = Inputs(),
) -> Throughput:
    """Prints the settings, then times the models with a progress bar (unless ``--quiet``)."""
    configure_torch(args)
    print(
        f"batch {args.batch_size}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
        f"channels_last={args.channels_last}, torch {torch.__version__}",
        flush=True,
    )
    from tqdm.auto import tqdm

    steps = (args.rounds + 1) * len(factories)  # a warm-up pass, then the timed rounds
    with tqdm(total=steps, desc="benchmark", unit="model", disable=args.quiet, leave=False) as bar:

        def advance(message: str) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update()

        return measure_with_args(factories, baseline, args, progress=advance, inputs=inputs)


def run_benchmark(args: argparse.Namespace) -> int:
    """``rsvit benchmark``: the models as rsvit builds them (``build_classifier``, random weights).

    With ``--teacher``, ``--student`` or ``--config``: a distillation teacher against its student.
    """
    if args.teacher or args.student or args.config:
        return run_teacher_student(args)
    from rsvit.models.backbones.factory import resolve_backbone_name
    from rsvit.models.classifier import build_classifier

    models = list(dict.fromkeys(args.models))
    baseline = args.baseline or models[0]
    if baseline not in models:
        models.insert(0, baseline)
    for name in models:
        resolve_backbone_name(name)  # unknown names fail before any model is built
    factories = {name: (lambda name=name: build_classifier(name, NUM_CLASSES)) for name in models}
    result = time_models(factories, baseline, args)
    print(result.table())
    return 0


def run_teacher_student(args: argparse.Namespace) -> int:
    """``rsvit benchmark --teacher T --student S`` (or ``--config``): both in the same interleaved rounds.

    The inputs are those of the family: one image, or two for change detection, of the spec's bands.
    """
    from rsvit.benchmark_distillation import teacher_and_student

    if args.baseline:
        raise ValueError(
            "--baseline applies to --models; with a teacher and a student the teacher is the base"
        )
    teacher, student = teacher_and_student(args)
    print(teacher.describe())
    print(student.describe())
    inputs = Inputs(in_chans=teacher.spec.in_chans, images=2 if teacher.spec.task == "change" else 1)
    factories = {"teacher": lambda: teacher.model, "student": lambda: student.model}
    result = time_models(factories, "teacher", args, inputs)
    print(result.comparison("student"))
    return 0
