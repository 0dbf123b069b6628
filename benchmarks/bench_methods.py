"""Cost of each adaptation method: parameters, forward+backward time and peak memory.

    .venv/bin/python benchmarks/bench_methods.py              # demo-size and paper-size models
    .venv/bin/python benchmarks/bench_methods.py --demo-only  # the demo-size models only
    .venv/bin/python benchmarks/bench_methods.py --family ctpet  # one family
    bash benchmarks/gpu_check.sh     # on a CUDA machine: paper size, bf16, batch 2

Three families of methods, each on a demo-size and a paper-size model, batch 1:

- ``image`` (papers 1 and 3): every single-backbone method on a ResNet, 2 channels (FA/MD);
  demo ResNet-10 at width 1/4, 48^3; paper the CT foundation model's ResNet-50 x2 at 128^3.
- ``ctpet`` (paper 5): PEMMA (LoRA and DoRA) and its baselines on a CT UNETR; demo
  ``unetr_tiny`` at 32^3, paper ``unetr_ct`` at 96^3; loss Dice-CE + Cox.
- ``multimodal`` (papers 2 and 4): Brain-Adapter, the anchored Q-former and its baselines
  on FA/MD + report-text embeddings + clinical and genetic vectors, and full fine-tuning of
  the ViT on the image alone; demo ``vit_tiny`` at 32^3 with 64-d text embeddings, paper
  ``vit_m3d`` (M3D's 32x256x256, patch 4x16x16, 768-d) with 4096-d text embeddings (LLaMA-2
  7B's width) of 64 tokens. The non-image anchors of the Q-former are stand-in transformers
  (2 blocks at the anchor width): the papers' LLaMA-2 and genomics models cannot run here.

For each method: total and trainable parameters, the median seconds of a training step
(forward, loss, backward, optimiser step; after one warm-up step) and the peak resident
memory of the process that ran it above what it held once its libraries were imported, each
method in a fresh process so peaks do not mix. Ratios are to the family's full-training
reference (``full_finetune``; ``early_fusion`` for CT/PET, which trains every weight),
measured side by side in the same run. Runs on the GPU when there is one (peak memory then
from torch.cuda.max_memory_allocated), on the CPU otherwise with the threads torch is given.
``--bf16`` runs the forward pass under bf16 autocast as the train rule does on CUDA;
``--batch`` sets the image family's batch. Also printed: samples per second, and for the
image family the loader's share of a step (seconds neuroadapt.image_stack takes to read the
batch's float16 .npy files from the page cache, over that plus the step).
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

IMAGE_SIZES = {
    "demo": {"backbone": "resnet10_w025", "shape": (1, 2, 48, 48, 48)},
    "paper": {"backbone": "resnet50_w2", "shape": (1, 2, 128, 128, 128)},
}
CTPET_SIZES = {"demo": "unetr_tiny", "paper": "unetr_ct"}
MULTIMODAL_SIZES = {
    "demo": {"vit": "vit_tiny", "text_dim": 64, "tokens": 16},
    "paper": {"vit": "vit_m3d", "text_dim": 4096, "tokens": 64},
}
#: Tabular inputs of the multimodal family (the demo phenotype's widths).
CLINICAL, GENETICS = 6, 20

FAMILIES = {
    "image": {
        "reference": "full_finetune",
        "methods": ("full_finetune", "scratch", "linear_probe", "lora", "dora", "molre"),
    },
    "ctpet": {
        "reference": "early_fusion",
        "methods": ("early_fusion", "ct_only", "pemma", "pemma_dora"),
    },
    "multimodal": {
        "reference": "full_finetune",
        "methods": (
            "full_finetune",
            "brain_adapter",
            "brain_adapter_fpm",
            "anchored_qformer",
            "late_fusion",
            "feature_concat",
        ),
    },
}
#: Benchmark rows that are a registered method with other settings.
VARIANTS = {
    "pemma_dora": ("pemma", {"use_dora": True}),
    "brain_adapter_fpm": ("brain_adapter", {"mode": "frozen_projection"}),
}


def quiet_backbone(name: str, in_channels: int):
    """A registered backbone with random weights (no weights here), without the warning."""
    import warnings

    from neuroadapt.models import get_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_backbone(name, in_channels=in_channels)


def image_shape(size: str, batch: int) -> tuple[int, ...]:
    return (batch, *IMAGE_SIZES[size]["shape"][1:])


def build_image(size: str, name: str, settings: dict, device: str, batch: int = 1):
    """An image method on a ResNet, its input volumes (``batch`` of them) and labels."""
    import torch

    from neuroadapt.methods import get_method

    spec = IMAGE_SIZES[size]
    backbone = quiet_backbone(spec["backbone"], spec["shape"][1])
    method = get_method(name)(backbone, task="binary", **settings)  # molre's default: multilabel
    x = torch.randn(*image_shape(size, batch), device=device)
    return method, x, torch.ones(batch, device=device)


def loader_seconds(size: str, batch: int) -> float:
    """Median seconds the training loader (neuroadapt.image_stack) takes to read one batch
    of this size's model-ready tensors (float16 .npy files, in the page cache)."""
    import tempfile

    import numpy as np

    from neuroadapt.image_stack import ImageStack

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for k in range(batch):
            paths.append(Path(folder) / f"sub-{k}_tensor.npy")
            np.save(paths[-1], np.ones(image_shape(size, batch)[1:], np.float16))
        stack = ImageStack.from_files(paths, channels=[0, 1])
        seconds = []
        for _ in range(5):
            started = time.perf_counter()
            stack[np.arange(batch)]
            seconds.append(time.perf_counter() - started)
    return sorted(seconds)[2]


def as_float(outputs):
    """Model outputs in float32 for the loss (bf16 autocast gives bfloat16 tensors)."""
    if isinstance(outputs, dict):
        return {key: value.float() for key, value in outputs.items()}
    return outputs.float()


def build_ctpet(size: str, name: str, settings: dict, device: str):
    """A paper-5 method on a CT UNETR, CT and PET volumes, a mask, a survival time/event."""
    import torch

    from neuroadapt.methods import get_method

    backbone = quiet_backbone(CTPET_SIZES[size], 1)
    method = get_method(name)(backbone, **settings)
    shape = (1, 1, *backbone.img_size)
    inputs = {"ct": torch.randn(shape, device=device), "pet": torch.randn(shape, device=device)}
    mask = torch.zeros(shape, device=device)
    mask[..., 8:16, 8:16, 8:16] = 1.0
    targets = {
        "mask": mask,
        "time": torch.tensor([12.0], device=device),
        "event": torch.tensor([1.0], device=device),
    }
    return method, inputs, targets


def build_multimodal(size: str, name: str, settings: dict, device: str):
    """A paper-2/4 method (or full fine-tuning of the ViT on the image alone) and its inputs."""
    import torch

    from neuroadapt.methods import get_method
    from neuroadapt.models import SequenceTokenEncoder, TabularTokenEncoder

    spec = MULTIMODAL_SIZES[size]
    vit = quiet_backbone(spec["vit"], 2)
    image = torch.randn(1, 2, *vit.config["img_size"], device=device)
    label = torch.ones(1, device=device)
    if name == "full_finetune":
        return get_method(name)(vit, task="binary", **settings), image, label
    text = torch.randn(1, spec["tokens"], spec["text_dim"], device=device)
    inputs = {
        "image": image,
        "report_text": text,
        "report_text_mask": torch.ones(1, spec["tokens"], dtype=torch.bool, device=device),
        "clinical": torch.randn(1, CLINICAL, device=device),
        "genetics": torch.randn(1, GENETICS, device=device),
    }
    if name == "brain_adapter":
        method = get_method(name)(vit, text_dim=spec["text_dim"], **settings)
        return method, inputs, {"label": label}
    width, heads = vit.feature_dim, vit.config["num_heads"]
    encoders = {
        "image": vit,
        "report_text": SequenceTokenEncoder(spec["text_dim"], width, layers=2, heads=heads),
        "clinical": TabularTokenEncoder(CLINICAL, width, layers=2, heads=heads),
        "genetics": TabularTokenEncoder(GENETICS, width, layers=2, heads=heads),
    }
    return get_method(name)(encoders, **settings), inputs, {"label": label}


BUILDERS = {"image": build_image, "ctpet": build_ctpet, "multimodal": build_multimodal}


def measure(family: str, size: str, row: str, steps: int, batch: int, bf16: bool) -> dict:
    """One benchmark row (a method, or a variant of one) on one model size, in this process."""
    import torch

    from neuroadapt.tasks import autocast

    device = "cuda" if torch.cuda.is_available() else "cpu"
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # libraries
    name, settings = VARIANTS.get(row, (row, {}))
    extra = {"batch": batch} if family == "image" else {}
    method, inputs, target = BUILDERS[family](size, name, dict(settings), device, **extra)
    model = method.model.to(device).train()
    optimizer = method.optimizer()
    seconds = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        with autocast(torch.device(device), bf16):
            outputs = model(inputs)
        method.loss(as_float(outputs), target).backward()
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
    step_s = sorted(seconds[1:])[len(seconds[1:]) // 2]
    samples = batch if family == "image" else 1
    load_s = loader_seconds(size, samples) if family == "image" else float("nan")
    return {
        "total": report.total,
        "trainable": report.trainable,
        "percent": report.percent,
        "step_s": step_s,
        "samples_per_s": samples / step_s,
        "loader_share": load_s / (load_s + step_s),
        "peak_mib": peak_mib,
        "device": device,
        "bf16": bf16 and device == "cuda",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-only", action="store_true")
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="image family's batch size")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--one", nargs=3, metavar=("FAMILY", "SIZE", "ROW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.batch, args.bf16)))
        return
    for family in args.family or list(FAMILIES):
        spec = FAMILIES[family]
        for size in ["demo"] + ([] if args.demo_only else ["paper"]):
            print(f"\n== {family}, {size} size")
            rows = {}
            for row in spec["methods"]:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--steps",
                        str(args.steps),
                        "--batch",
                        str(args.batch),
                        *(["--bf16"] if args.bf16 else []),
                        "--one",
                        family,
                        size,
                        row,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows[row] = json.loads(out.stdout.strip().splitlines()[-1])
            base = rows[spec["reference"]]
            print(
                f"  device: {base['device']}, bf16 {base['bf16']}, image batch {args.batch}; "
                f"ratios to {spec['reference']}"
            )
            print(
                f"  {'method':<18} {'total':>12} {'trainable':>12} {'%':>7} {'step s':>8} "
                f"{'x ref':>6} {'samples/s':>9} {'loader':>7} {'peak MiB':>9} {'x ref':>6}"
            )
            for name, row in rows.items():
                print(
                    f"  {name:<18} {row['total']:>12,} {row['trainable']:>12,} "
                    f"{row['percent']:>7.3f} {row['step_s']:>8.3f} "
                    f"{row['step_s'] / base['step_s']:>6.2f} {row['samples_per_s']:>9.2f} "
                    f"{row['loader_share']:>7.1%} {row['peak_mib']:>9.0f} "
                    f"{row['peak_mib'] / base['peak_mib']:>6.2f}"
                )


if __name__ == "__main__":
    main()
