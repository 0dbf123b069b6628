"""Cost of the interpret rule against the train rule, and what batching the attributions buys.

    .venv/bin/python benchmarks/bench_interpret.py            # the demo's model and test part
    .venv/bin/python benchmarks/bench_interpret.py --quick    # fewer epochs and subjects

On a synthetic cohort of the demo's size (36 subjects, 2x32^3 FA/MD-like tensors, a third of
them in the test part) and the demo's backbone (``resnet18_w05``, random weights: the cost does
not depend on them), side by side in one process, one thread as the rules run:

- the train job's fit: LoRA for the demo's epochs budget (``--epochs``), without tuning;
- the interpret job on the same run: each attribution of :mod:`neuroadapt.attribution`
  with the demo's settings, for every test subject; the ratio to the fit is what the
  interpret rule adds to a train job (the demo tunes 2 trials, which halves it again);
- batched against one forward pass at a time: integrated gradients with its steps in one
  batch against ``internal_batch_size=1``, occlusion with 32 perturbations per pass against 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 epochs, 4 test subjects")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch
    from test_train import EXPERIMENT, write_toy_cohort

    from neuroadapt.attribution import ATTRIBUTIONS, InterpretSettings, attribute
    from neuroadapt.interpret import interpret_run
    from neuroadapt.train import run_training

    epochs = 6 if args.quick else args.epochs
    test = 4 if args.quick else 12
    roles = ["train"] * (36 - test - 4) + ["validation"] * 4 + ["test"] * test
    backbone = {"name": "resnet18_w05"}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        cohort = write_toy_cohort(root / "cohort", roles=roles)
        started = time.perf_counter()
        run_training(
            experiment_name="bench",
            experiment=EXPERIMENT,
            method_name="lora",
            method_settings={"r": 4},
            training={"epochs": epochs, "batch_size": 4, "patience": epochs, "seed": 0},
            backbone=backbone,
            fold=1,
            out_dir=str(root / "run"),
            resume_path=str(root / "resume.pt"),
            progress=False,
            **cohort,
        )
        fit = time.perf_counter() - started
        print(f"threads {torch.get_num_threads()}, {len(roles)} subjects, {test} in the test part")
        print(f"train job (LoRA, {epochs} epochs): {fit:.1f} s")
        timings = {}
        for name in ATTRIBUTIONS:
            started = time.perf_counter()
            interpret_run(
                experiment=EXPERIMENT,
                method_name="lora",
                backbone=backbone,
                fold=1,
                run_dir=str(root / "run"),
                out_dir=str(root / f"interpret-{name}"),
                settings={"attributions": [name]},
                **cohort,
            )
            timings[name] = time.perf_counter() - started
            print(
                f"interpret, {name:<21} {timings[name]:6.1f} s  "
                f"{timings[name] / test:5.2f} s/subject  {timings[name] / fit:.3f} x train"
            )
        total = sum(timings.values())
        print(f"interpret, all three (run one by one) {total:.1f} s = {total / fit:.3f} x train")

        # batched against one forward pass at a time, on one subject
        from neuroadapt.models import get_backbone

        net = get_backbone("resnet18_w05", 2).eval()
        model = torch.nn.Sequential(net, torch.nn.Linear(net.feature_dim, 1)).eval()
        sample = torch.rand(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(0))

        def forward(images):
            return model(images)[:, 0]

        for name in ("integrated_gradients", "occlusion"):
            settings = InterpretSettings(attributions=(name,))
            started = time.perf_counter()
            attribute(forward, sample, settings)
            batched = time.perf_counter() - started
            one = _one_at_a_time(forward, sample, settings)
            print(
                f"{name}: batched {batched:.2f} s, one pass at a time {one:.2f} s: "
                f"{one / batched:.1f}x"
            )


def _one_at_a_time(forward, sample, settings) -> float:
    """The same attribution with one image per forward pass."""
    import torch
    from captum.attr import IntegratedGradients, Occlusion

    started = time.perf_counter()
    if "integrated_gradients" in settings.attributions:
        IntegratedGradients(forward).attribute(
            sample,
            baselines=torch.zeros_like(sample),
            n_steps=settings.steps,
            internal_batch_size=1,
        )
    else:
        w, c = settings.occlusion_window, sample.shape[1]
        with torch.no_grad():
            Occlusion(forward).attribute(
                sample,
                sliding_window_shapes=(c, w, w, w),
                strides=(c, w, w, w),
                baselines=0.0,
                perturbations_per_eval=1,
            )
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
