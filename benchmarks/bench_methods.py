"""Cost of each adaptation method: parameters, forward+backward time and peak memory.

    .venv/bin/python benchmarks/bench_methods.py              # demo-size and paper-size backbones
    .venv/bin/python benchmarks/bench_methods.py --demo-only  # the demo-size backbone only

For each registered method, on the demo-size backbone (ResNet-10, width 1/4, 2 channels,
48^3 input) and on the paper-size one (the CT foundation model's ResNet-50 x2, 2 channels,
128^3 as paper 1), batch 1: total and trainable parameters, the median seconds of a
training step (forward, loss, backward, optimiser step; after one warm-up step) and the
peak resident memory of the process that ran it above what it held once its libraries were
imported, each method in a fresh process so peaks do not mix. Ratios are to full
fine-tuning, measured side by side in the same run. Runs on
the GPU when there is one (peak memory then from torch.cuda.max_memory_allocated), on the
CPU otherwise with the threads torch is given.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = {
    "demo": {"backbone": "resnet10_w025", "shape": (1, 2, 48, 48, 48)},
    "paper": {"backbone": "resnet50_w2", "shape": (1, 2, 128, 128, 128)},
}
METHODS = ("full_finetune", "scratch", "linear_probe", "lora", "dora", "molre")


def measure(size: str, method_name: str, steps: int) -> dict:
    """One method on one backbone, in this process."""
    import warnings

    import torch

    from neuroadapt.methods import get_method
    from neuroadapt.models import get_backbone

    device = "cuda" if torch.cuda.is_available() else "cpu"
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # libraries
    spec = SIZES[size]
    with warnings.catch_warnings():  # random initialisation warns: no weights here
        warnings.simplefilter("ignore")
        backbone = get_backbone(spec["backbone"], in_channels=spec["shape"][1])
    method = get_method(method_name)(backbone, task="binary")
    model = method.model.to(device).train()
    optimizer = method.optimizer()
    x = torch.randn(*spec["shape"], device=device)
    y = torch.ones(spec["shape"][0], device=device)
    seconds = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        method.loss(model(x), y).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    report = method.parameter_report()
    peak_mib = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mib
    )
    return {
        "total": report.total,
        "trainable": report.trainable,
        "percent": report.percent,
        "step_s": sorted(seconds[1:])[len(seconds[1:]) // 2],
        "peak_mib": peak_mib,
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-only", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps)))
        return
    for size in ["demo"] + ([] if args.demo_only else ["paper"]):
        spec = SIZES[size]
        print(f"\n== {size}: {spec['backbone']}, input {spec['shape']}")
        rows = {}
        for name in METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--one", size, name],
                capture_output=True,
                text=True,
                check=True,
            )
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        base = rows["full_finetune"]
        print(f"  device: {base['device']}")
        print(
            f"  {'method':<14} {'total':>12} {'trainable':>12} {'%':>7} {'step s':>8} "
            f"{'x FT':>6} {'peak MiB':>9} {'x FT':>6}"
        )
        for name, row in rows.items():
            print(
                f"  {name:<14} {row['total']:>12,} {row['trainable']:>12,} "
                f"{row['percent']:>7.3f} {row['step_s']:>8.3f} "
                f"{row['step_s'] / base['step_s']:>6.2f} {row['peak_mib']:>9.0f} "
                f"{row['peak_mib'] / base['peak_mib']:>6.2f}"
            )


if __name__ == "__main__":
    main()
