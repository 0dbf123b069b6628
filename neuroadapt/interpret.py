"""The ``interpret`` rule: attribution maps of one trained run (experiment x method x fold)
for its fold's test part, scored against the planted ground truth where there is one.

The run's model is rebuilt as the train job built it (method settings, tuned values and
protocol from its ``run.json``), with the trained state of the selection the task explains
(``explained_selection``: best validation AUC; for segmentation+survival, best C-index, as
the risk is explained). Each test sample's every explained output (the positive logit; one
logit per label for multilabel; the risk) gets the attributions of
:mod:`neuroadapt.attribution` on the model-ready grid.

Written to ``out_dir``:

* ``scores.tsv``: per sample, target and attribution: the sample's label for that target, and
  where a ground-truth region exists (:mod:`neuroadapt.localisation`): mass share, region
  share, enrichment, pointing-game hit and its chance;
* ``group_maps.npz``: sums over the test samples, each with its count (``n/<name>``), on the
  model-ready grid: ``map/<target>/<attribution>/<class>`` the maps each scaled to unit mass,
  ``image/<target>/<class>`` the first image channel (FA; CT), ``region/<target>`` the
  planted regions; :func:`neuroadapt.attribution_summary.group_maps` averages them over folds;
* for diffusion tensors, per sample: each map on the grid the tensor was made from
  (``<prefix>_space-<space>_target-<target>_desc-<attribution>_attribution.nii.gz``: the
  subject's DWI space, or the template where ``dwi.model_ready.space`` is template).

Ground truth: a demo session's ``<prefix>_planted-<target>_mask.nii.gz`` in the dataset's
ground-truth folder (where its planted effect acts; empty when it does not carry it), and for
segmentation+survival the GTV mask of the box. Samples with an empty region get no score.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neuroadapt.attribution import attribute, grad_cam_layer, interpret_settings
from neuroadapt.errors import InputError
from neuroadapt.io import atomic_directory
from neuroadapt.localisation import localisation_scores, planted_mask_name, to_grid
from neuroadapt.subjects import row_prefix

__all__ = ["SCORE_COLUMNS", "interpret_run"]

SCORE_COLUMNS = [
    "fold",
    "participant_id",
    "session_id",
    "target",
    "label",
    "attribution",
    "layer",
    "mass_share",
    "region_share",
    "enrichment",
    "hit",
    "hit_chance",
]


def _grid(tensor_path: str | Path) -> np.ndarray:
    """The voxel -> world affine of a model-ready tensor, from its JSON sidecar."""
    sidecar = Path(str(tensor_path).removesuffix(".npy") + ".json")
    try:
        return np.asarray(json.loads(sidecar.read_text())["Affine"], dtype=float)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(
            sidecar, f"has no readable Affine ({error})", "rerun the dwi job"
        ) from None


def _truth_region(truth_dir, prefix: str, target: str, shape, grid) -> np.ndarray | None:
    """The planted region of ``target`` in session ``prefix`` on the model-ready grid, or
    None when the ground truth has none for this target."""
    import nibabel as nib

    path = Path(truth_dir) / planted_mask_name(prefix, target)
    if not path.is_file():
        return None
    image = nib.load(path)
    return to_grid(np.asarray(image.dataobj), image.affine, shape, grid, order=0) > 0.5


def interpret_run(
    *,
    experiment: Mapping,
    method_name: str,
    backbone: Mapping,
    fold: int,
    subjects_table: str,
    fold_table: str,
    tensors: Sequence[str],
    run_dir: str,
    out_dir: str,
    settings: Mapping | None = None,
    masks: Sequence[str] | None = None,
    phase1_runs: Sequence[str] | None = None,
    truth_dir: str | None = None,
    source_maps: Sequence[str] | None = None,
    space: str = "dwi",
    threads: int = 1,
    device: str = "auto",
) -> pd.DataFrame:
    """Attributions of the run in ``run_dir`` for its test part, written to ``out_dir`` (see
    the module). ``source_maps``: per subjects.tsv row, the image whose grid the tensor was
    resampled from (the FA map in ``space``), for the per-sample maps; ``truth_dir``: the
    demo's ground-truth folder. Returns the scores table."""
    from neuroadapt.cohort import load_cohort
    from neuroadapt.tasks import task_for
    from neuroadapt.train import (
        PROTOCOL,
        build_method,
        load_trainable_state,
        phase1_states,
        resolve_device,
    )
    from neuroadapt.train_settings import training_settings
    from neuroadapt.tuning import tuned_method_settings

    config = interpret_settings(settings)
    torch.set_num_threads(max(1, int(threads)))
    dev = resolve_device(device)
    summary_path = Path(run_dir) / "run.json"
    if not summary_path.is_file():
        raise InputError(summary_path, "is missing", "rerun the train job of this run")
    summary = json.loads(summary_path.read_text())
    task = task_for(experiment["task"], experiment["inputs"])
    cohort = load_cohort(subjects_table, fold_table, tensors, experiment, "experiments", masks)
    trained, _, _ = training_settings(
        {k: v for k, v in summary["training"].items() if k != "augment"}, "training"
    )
    method = build_method(
        method_name,
        backbone,
        cohort.images.shape[1],
        experiment["task"],
        tuned_method_settings(summary.get("method_settings"), summary.get("tuned") or {}),
        trained.seed,
        "experiments.methods",
        image_size=cohort.images.shape[2:],
        extra=cohort.extra,
        num_labels=len(cohort.label_names) or None,
        protocol={key: getattr(trained, key) for key in PROTOCOL},
        phase1=phase1_states(phase1_runs or [], fold),
    )
    model_file = Path(run_dir) / f"model-{task.explained_selection}.pt"
    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    load_trainable_state(method.model, saved["state"])
    model = method.model.to(dev).eval()
    for parameter in model.parameters():  # only the input's gradient is needed
        parameter.requires_grad_(False)

    targets = task.explained_targets(cohort, experiment["target"])
    labels = cohort.labels.numpy().reshape(len(cohort.labels), -1)
    test = cohort.indices("test")
    layer = None
    if len(test) and "grad_cam" in config.attributions:
        layer = grad_cam_layer(model, cohort.images[test[:1]].to(dev), config.grad_cam_min_size)
    rows, sums, counts = [], {}, {}
    natives = []  # (file name, map, grid, source map path)
    started = time.perf_counter()
    for i in test:
        ids = cohort.ids.iloc[i]
        prefix = row_prefix(ids.participant_id, ids.session_id)
        sample = cohort.images[[i]].to(dev)
        support = (sample[0] != 0).any(dim=0).cpu().numpy()
        # the tensor's grid: for the per-sample maps and to bring the planted regions onto it
        grid = _grid(tensors[i]) if source_maps or truth_dir is not None else None
        for k, target in enumerate(targets):
            label = int(labels[i, k])
            forward = task.attribution_forward(model, cohort, i, k)
            maps = attribute(forward, sample, config, layer)
            if cohort.masks is not None:
                region = cohort.masks[i, 0].numpy() > 0.5
            elif truth_dir is not None:
                region = _truth_region(truth_dir, prefix, target, support.shape, grid)
            else:
                region = None
            _add(sums, counts, f"image/{target}/{label}", sample[0, 0].cpu().numpy())
            if region is not None and region.any():
                _add(sums, counts, f"region/{target}", region.astype(np.float32))
            for name, values in maps.items():
                mass = float(values.sum())
                _add(
                    sums, counts, f"map/{target}/{name}/{label}", values / mass if mass else values
                )
                scores = (
                    localisation_scores(values, region, support)
                    if region is not None and region.any()
                    else {}
                )
                rows.append(
                    {
                        "fold": fold,
                        "participant_id": ids.participant_id,
                        "session_id": ids.session_id,
                        "target": target,
                        "label": label,
                        "attribution": name,
                        "layer": layer[0] if name == "grad_cam" and layer else "n/a",
                    }
                    | scores
                )
                if source_maps:
                    natives.append(
                        (
                            f"{prefix}_space-{space}_target-{target.replace('_', '')}_"
                            f"desc-{name.replace('_', '')}_attribution.nii.gz",
                            values,
                            grid,
                            source_maps[i],
                        )
                    )
    table = pd.DataFrame(rows).reindex(columns=SCORE_COLUMNS)
    with atomic_directory(out_dir) as staging:
        table.to_csv(
            staging / "scores.tsv", sep="\t", index=False, na_rep="n/a", lineterminator="\n"
        )
        arrays = sums | {f"n/{name}": np.array(n) for name, n in counts.items()}
        np.savez_compressed(staging / "group_maps.npz", **arrays)
        _write_source_maps(staging, natives)
        (staging / "interpret.json").write_text(
            json.dumps(
                {
                    "method": method_name,
                    "fold": fold,
                    "selection": task.explained_selection,
                    "epoch": saved.get("epoch"),
                    "targets": targets,
                    "attributions": list(config.attributions),
                    "grad_cam_layer": layer[0] if layer else None,
                    "settings": {
                        "steps": config.steps,
                        "occlusion_window": config.occlusion_window,
                    },
                    "test_samples": int(len(test)),
                    "seconds": round(time.perf_counter() - started, 2),
                    "device": str(dev),
                },
                indent=2,
            )
            + "\n"
        )
    return table


def _add(sums: dict, counts: dict, name: str, values: np.ndarray) -> None:
    sums[name] = sums.get(name, 0) + values
    counts[name] = counts.get(name, 0) + 1


def _write_source_maps(folder: Path, natives) -> None:
    """Each map resampled (linear) onto the grid its tensor was made from, as NIfTI."""
    import nibabel as nib

    references = {}
    for name, values, grid, source in natives:
        if source not in references:
            references[source] = nib.load(source)
        reference = references[source]
        moved = to_grid(values, grid, reference.shape[:3], reference.affine, order=1)
        nib.save(nib.Nifti1Image(moved.astype(np.float32), reference.affine), folder / name)
