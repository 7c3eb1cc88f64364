"""Wall time of ``rsvit --help`` against ``python -c pass``, measured in the same run.

Help must answer without importing torch (goal: under 0.5 s on a quiet machine). Each round runs both
commands once, alternating, so load on the machine hits both alike; the median over rounds is reported.

    python benchmarks/cli_startup.py --rounds 11
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "rsvit --help": [sys.executable, "-m", "rsvit", "--help"],
    "rsvit predict-raster --help": [sys.executable, "-m", "rsvit", "predict-raster", "--help"],
}


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, argv in COMMANDS.items():
            times[name].append(_seconds(argv))
    base = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<30} median {median:.3f} s  (+{median - base:.3f} s over python)  n={len(values)}")


if __name__ == "__main__":
    main()
