"""Peak memory of a train job's cohort as it grows, in memory vs memory-mapped, and the
image loader's throughput against the model's consumption, side by side in one run.

    .venv/bin/python benchmarks/bench_cohort_memory.py            # ~5 min, 2.1 GB of /tmp
    .venv/bin/python benchmarks/bench_cohort_memory.py --quick    # 100 vs 500 subjects

Part 1: N model-ready tensors (2 x 64^3 float16, 1 MiB each) for N = 100 and 2,000; in a
fresh process each, the cohort is opened and one epoch of batches of 8 goes through a small
3D CNN (forward + backward), either as the pipeline did before (every array read into one
float32 tensor) or with neuroadapt.image_stack (a batch maps its own files). The peak
resident memory of each process (ru_maxrss) and its growth from the smallest cohort are
printed.

Part 2, paper size (2 x 128^3, 16 subjects): samples per second the loader gives
(ImageStack batches of 2, files in the page cache) against samples per second paper 1's
model consumes on this CPU (MONAI ResNet-50, width 2, LoRA r=4 via neuroadapt.methods,
forward + backward + step, batch 2); their ratio must exceed 5 so the loader does not starve the
model (on a GPU the model is many times faster: rerun this part there).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_cohort(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    template = rng.random((2, size, size, size)).astype(np.float16)
    paths = []
    for k in range(n):
        path = folder / f"sub-{k:05d}_tensor.npy"
        if not path.exists():
            np.save(path, template)
        paths.append(path)
    return paths


def epoch(paths: list[str], mode: str) -> dict:
    """Runs in a child process: open the cohort, one epoch, report peak memory."""
    import torch

    from neuroadapt.image_stack import ImageStack

    torch.set_num_threads(1)
    started = time.perf_counter()
    if mode == "in_memory":
        images = ImageStack.from_tensor(
            torch.from_numpy(np.stack([np.load(p) for p in paths]).astype(np.float32))
        )
    else:
        images = ImageStack.from_files(paths, channels=[0, 1])
    model = torch.nn.Sequential(
        torch.nn.Conv3d(2, 4, 3, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 1),
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    order = np.random.default_rng(0).permutation(len(images))
    for start in range(0, len(order), 8):
        batch = images[order[start : start + 8]]
        loss = model(batch).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": peak_mib, "seconds": time.perf_counter() - started}


def loader_against_model(folder: Path) -> dict:
    import torch

    from neuroadapt.image_stack import ImageStack
    from neuroadapt.models.backbones import get_backbone

    paths = write_cohort(folder, 16, 128)
    stack = ImageStack.from_files(paths, channels=[0, 1])
    stack[np.arange(16)]  # warm the page cache, as every epoch after the first finds it
    started, read = time.perf_counter(), 0
    while time.perf_counter() - started < 3.0:
        for k in range(0, 16, 2):
            stack[np.arange(k, k + 2)]
            read += 2
    loader = read / (time.perf_counter() - started)
    # the training loop's reader with 2 worker processes reading ahead (training.loader_workers)
    from neuroadapt.image_stack import BatchReader

    reader = BatchReader(stack, workers=2)
    batches = [np.arange(k, k + 2) for k in range(0, 16, 2)]
    list(reader.epoch(batches))  # starts the workers
    started, read = time.perf_counter(), 0
    while time.perf_counter() - started < 3.0:
        read += sum(len(index) for index, _ in reader.epoch(batches))
    workers = read / (time.perf_counter() - started)

    import warnings

    from neuroadapt.methods import get_method

    torch.set_num_threads(2)
    with warnings.catch_warnings():  # random weights: the step's cost, not its result
        warnings.simplefilter("ignore")
        backbone = get_backbone("resnet50_w2", in_channels=2)
    method = get_method("lora")(backbone, task="binary", r=4)
    model = method.model.train()
    optimiser = method.optimizer()
    batch, target, steps = stack[np.arange(2)], torch.ones(2), 3
    method.loss(model(batch), target).backward()  # first call: allocations
    started = time.perf_counter()
    for _ in range(steps):
        optimiser.zero_grad()
        method.loss(model(batch), target).backward()
        optimiser.step()
    consumed = steps * 2 / (time.perf_counter() - started)
    return {"loader": loader, "workers": workers, "model": consumed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, listing = args.child
        print(json.dumps(epoch(json.loads(Path(listing).read_text()), mode)))
        return
    work = Path(tempfile.gettempdir()) / "neuroadapt-bench-cohort"
    sizes = (100, 500) if args.quick else (100, 2000)
    paths = write_cohort(work / "cohort64", max(sizes), 64)
    print(f"part 1: 2 x 64^3 float16 tensors (1 MiB each), cohorts of {sizes[0]} and {sizes[1]}")
    results = {}
    for mode in ("in_memory", "memory_mapped"):
        for n in sizes:
            listing = work / f"list-{n}.json"
            listing.write_text(json.dumps([str(p) for p in paths[:n]]))
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(listing)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode, n] = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"  {mode:14s} N={n:5d}: peak {results[mode, n]['peak_mib']:8.0f} MiB, "
                f"epoch {results[mode, n]['seconds']:6.1f} s"
            )
    for mode in ("in_memory", "memory_mapped"):
        small, large = (results[mode, n]["peak_mib"] for n in sizes)
        print(f"  {mode:14s}: peak memory x{large / small:.2f} from N={sizes[0]} to {sizes[1]}")
    rates = loader_against_model(work / "cohort128")
    print("part 2: paper size 2 x 128^3, batch 2, this CPU")
    print(
        f"  loader {rates['loader']:.1f} samples/s, ResNet-50 w2 + LoRA step "
        f"{rates['model']:.2f} samples/s: loader / model = {rates['loader'] / rates['model']:.0f}x"
    )
    print(
        f"  BatchReader with 2 workers {rates['workers']:.1f} samples/s "
        f"({rates['workers'] / rates['loader']:.2f}x the in-process reads)"
    )


if __name__ == "__main__":
    main()
