"""SAM's exported graphs in fp32 and int8: file sizes, encoder time and mask agreement, in one run.

    bash scripts/in-env python benchmarks/sam_int8.py                    # sam_vit_b, random weights
    bash scripts/in-env python benchmarks/sam_int8.py --rounds 5 --threads 1

Builds the SAM of ``--backbone`` from its spec with random weights (seeded; no checkpoint is read), saves
it as an rsvit model file and runs ``rsvit export OUT.onnx --int8 Q.onnx --check-data`` on it, which checks
the fp32 pair against eager SAM and prints the int8 pair's mask agreement with fp32 on a real NAIP crop.
Then it times the two encoder graphs on that crop (resized to the model input, 1024 px for ViT-B) in
interleaved rounds (fp32, int8, then int8, fp32, ...), with ``--threads`` ONNX Runtime threads, and prints
the median and range of the seconds per image, and the sizes of the four files.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="sam_vit_b")
    parser.add_argument("--data", default=str(DATA), help="shared/data folder (the NAIP scene)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from rsvit.cli.export import add_export_arguments, run_export
    from rsvit.export.promptable import sam_check_image, sam_paths
    from rsvit.export.sam_runtime import OnnxSam
    from rsvit.models import ModelSpec, build_model, save_model
    from rsvit.weights import WeightsMetadata

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = ModelSpec("promptable", args.backbone)
    model = build_model(spec).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_model(folder / "sam.safetensors", model, spec, WeightsMetadata())
        argv = [str(folder / "sam.safetensors"), str(folder / "sam.onnx"), "--check-data", args.data]
        started = time.perf_counter()
        status = run_export(
            add_export_arguments(argparse.ArgumentParser()).parse_args(
                [*argv, "--int8", str(folder / "q.onnx")]
            )
        )
        print(f"export, check and int8 report took {time.perf_counter() - started:.0f} s (status {status})")
        fp32_paths, int8_paths = sam_paths(folder / "sam.onnx", "onnx"), sam_paths(folder / "q.onnx", "onnx")
        for paths in (fp32_paths, int8_paths):
            for path in paths.values():
                print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
        models = {
            "fp32": OnnxSam(*fp32_paths.values(), threads=args.threads),
            "int8": OnnxSam(*int8_paths.values(), threads=args.threads),
        }
        image = sam_check_image(args.data, model.img_size)
        times: dict[str, list[float]] = {name: [] for name in models}
        names = list(models)
        for name in names:  # warm-up
            models[name].image_encoder(image)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                models[name].image_encoder(image)
                times[name].append(time.perf_counter() - started)
        print(f"encoder on a {tuple(image.shape[-2:])} crop, {args.threads} thread(s), {args.rounds} rounds:")
        median = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(
                f"  {name}: median {median[name]:.2f} s (range {min(t):.2f}-{max(t):.2f}), "
                f"{median['fp32'] / median[name]:.2f}x fp32"
            )


if __name__ == "__main__":
    main()
