"""Training one method on one fold: resumable, deterministic, on the GPU when there is one.

One call of :func:`run_training` is one Snakemake ``train`` job (experiment x method x fold):

* seeds fix the model's initialisation, the batch order and the augmentations of every epoch
  (each epoch draws from its own seeded generator), so a run is reproducible and a resumed
  run continues exactly as an uninterrupted one would;
* after every epoch the whole state (model, optimiser, selected models, history,
  early-stopping counter) goes to a resume file, written atomically; a killed or requeued
  job restarts from the last finished epoch. The resume file carries a fingerprint of the
  run's settings and inputs, and a stale one (settings changed) is ignored;
* bf16 autocast on CUDA, plain float32 on CPU;
* early stopping on the validation loss; two models are kept, as in paper 1: for
  classification the epoch of best validation accuracy and of best validation AUC (for
  multilabel: mean per-label accuracy and macro AUC), for
  segmentation+survival of best validation Dice and of best C-index (ties, frequent on
  small validation parts, go to the epoch of lower validation loss); the task object
  (:mod:`neuroadapt.tasks`) makes the batches, the validation metrics and the predictions;
* outputs (selected models' trainable weights, per-epoch history, out-of-fold predictions
  of the test part, run.json) appear together in one folder, or not at all. TensorBoard
  scalars go to their own folder as the run goes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from neuroadapt.cohort import Cohort
from neuroadapt.distributed import current_ranks, from_rank0, launch, summed, wrap
from neuroadapt.errors import ConfigError, InputError
from neuroadapt.experiments import UNIMODAL_PREFIX
from neuroadapt.image_stack import BatchReader
from neuroadapt.io import atomic_directory
from neuroadapt.missing_modality import MISSING_MODALITY_FILE, missing_modality_predictions
from neuroadapt.tasks import (
    Augmenter,
    MultimodalClassificationTask,
    predict_probabilities,
    task_for,
)
from neuroadapt.train_settings import (
    PROTOCOL,
    AugmentSettings,
    TrainSettings,
    refuse_protocol_settings,
    training_settings,
)

__all__ = [
    "AugmentSettings",
    "TrainSettings",
    "build_method",
    "fit",
    "predict_probabilities",
    "resolve_device",
    "run_training",
    "train_job",
    "training_settings",
]

log = logging.getLogger(__name__)

VERSIONED = ("neuroadapt", "torch", "monai", "peft", "numpy", "pandas", "scikit-learn")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when CUDA has one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_method(
    method: str,
    backbone: Mapping,
    in_channels: int,
    task: str,
    method_settings: Mapping | None,
    seed: int,
    where: str,
    image_size: Sequence[int] | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
    num_labels: int | None = None,
    protocol: Mapping | None = None,
    phase1: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
):
    """The registered method ``method`` on the backbone ``backbone`` ({name, weights,
    sha256}); ``method_settings`` are its keyword arguments (e.g. r, lr_adapters); a
    multilabel ``task`` gets one output per label (``num_labels``). ``protocol`` holds the
    experiment's settings that every method taking them gets alike (``PROTOCOL`` of
    ``training``: ``head_hidden``, ``train_norms``), so the methods compared do not differ
    in head or normalisation policy; a method's own settings may not set them.

    Image methods get a backbone reading ``in_channels`` channels and the ``task``; the CT/PET
    methods of paper 5 get the CT network (one channel) for volumes of ``image_size``; the
    text/tabular methods of papers 2 and 4 get encoders for the non-image inputs ``extra``
    (:func:`multimodal_classifier`), with paper 4's phase-1 models ``phase1`` (modality ->
    trained state of its ``unimodal_<modality>`` run) where the method builds on them."""
    from neuroadapt.experiments import MULTIMODAL_CLASSIFICATION_METHODS
    from neuroadapt.methods import MultimodalMethod, get_method
    from neuroadapt.models import get_backbone
    from neuroadapt.models.backbones import takes_image_size

    try:
        cls = get_method(method)
    except KeyError as error:
        raise ConfigError(where, str(error.args[0]), "fix the experiment's methods list") from None
    settings = dict(method_settings or {})
    accepted = set(inspect.signature(cls.__init__).parameters) - {
        "self",
        "backbone",
        "encoders",
        "task",
    }
    refuse_protocol_settings(method, settings)
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ConfigError(
            f"method_settings.{method}.{unknown[0]}",
            f"is not a parameter of method {method}",
            f"use one of: {', '.join(sorted(set(accepted) - set(PROTOCOL)))}",
        )
    settings |= {k: v for k, v in (protocol or {}).items() if k in accepted}
    torch.manual_seed(seed)  # adapter and head initialisation
    if method in MULTIMODAL_CLASSIFICATION_METHODS:
        return multimodal_classifier(
            cls, backbone, in_channels, extra or {}, settings, image_size=image_size, phase1=phase1
        )
    multimodal = issubclass(cls, MultimodalMethod)
    sized = multimodal and image_size is not None and takes_image_size(backbone["name"])
    net = get_backbone(
        backbone["name"],
        1 if multimodal else in_channels,
        weights=backbone.get("weights"),
        sha256=backbone.get("sha256"),
        **({"img_size": tuple(image_size)} if sized else {}),
    )
    if "seed" in accepted:
        settings.setdefault("seed", seed)
    if multimodal:
        return cls(net, **settings)
    if task == "multilabel":
        settings["num_classes"] = int(num_labels or 0)
    return cls(net, task=task, **settings)


def multimodal_classifier(
    cls,
    backbone: Mapping,
    in_channels: int,
    extra: Mapping,
    settings,
    image_size: Sequence[int] | None = None,
    phase1: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
):
    """A paper-2/4 method for a binary experiment. ``brain_adapter``: its adapter maps the
    ``in_channels`` image of ``image_size`` onto the (one-channel) ViT's grid (strided where
    the image is at least twice the grid), the text width comes from the report embeddings.
    The others get one encoder per input: the ViT (on ``in_channels``), and for the report
    embeddings and each table a 2-block transformer at the ViT's width (the demo has no
    pretrained foundation model for those). A ``unimodal_<m>`` method (paper 4's phase 1)
    fine-tunes its modality's encoder; a method that builds on phase 1 (card
    ``uses_phase1``) gets each encoder with the weights of its phase-1 model (``phase1``:
    modality -> that run's selected state, keys ``encoder.*`` and ``head.*``), frozen, and
    starts its per-modality heads from the phase-1 heads."""
    from neuroadapt.models import SequenceTokenEncoder, TabularTokenEncoder, get_backbone

    adapter = cls.name == "brain_adapter"
    vit = get_backbone(
        backbone["name"],
        1 if adapter else in_channels,
        weights=backbone.get("weights"),
        sha256=backbone.get("sha256"),
    )
    if adapter:
        text = extra["report_text"].shape[-1]
        size = {} if image_size is None else {"in_size": tuple(int(v) for v in image_size)}
        return cls(vit, task="binary", text_dim=text, in_channels=in_channels, **size, **settings)
    width, heads = vit.feature_dim, vit.config["num_heads"]
    encoders: dict = {"image": vit}
    if "report_text" in extra:
        text = extra["report_text"].shape[-1]
        encoders["report_text"] = SequenceTokenEncoder(text, width, layers=2, heads=heads)
    for name in ("clinical", "genetics"):
        if name in extra:
            features = extra[name].shape[-1]
            encoders[name] = TabularTokenEncoder(features, width, layers=2, heads=heads)
    if not cls.card.uses_phase1:
        return cls(encoders, task="binary", **settings)
    missing = sorted(set(encoders) - set(phase1 or {}))
    if missing:
        raise ConfigError(
            f"methods.{cls.name}",
            f"builds on paper 4's phase-1 models, but none was given for {', '.join(missing)}",
            "train unimodal_<modality> on the same fold first (the workflow does)",
        )
    heads = {}
    for name, encoder in encoders.items():
        state = phase1[name]
        heads[name] = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
        weights = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        try:
            encoder.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise ConfigError(
                f"methods.{cls.name}",
                f"the phase-1 model of {name} does not fit its encoder ({str(error)[:200]})",
                "retrain unimodal_" + name + " with the experiment's current settings",
            ) from None
    method = cls(encoders, task="binary", **settings)
    method.load_phase1_heads(heads)
    return method


def epoch_batches(n: int, batch_size: int, seed: int, processes: int = 1) -> list[torch.Tensor]:
    """Shuffled index batches of one epoch. A trailing batch too small to give each of the
    ``processes`` two samples joins the one before it: BatchNorm cannot train on a single
    sample whose deepest map is 1x1x1 (with one process: a trailing batch of one)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2 * processes:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training can change: trainable parameters and every buffer (BatchNorm
    statistics), copied to the CPU. Frozen weights are rebuilt from the backbone file."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    names |= {name for name, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    unexpected = model.load_state_dict(dict(state), strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"saved state does not fit the model: {unexpected[:5]}")


@dataclass
class FitResult:
    history: list[dict]
    selected: dict[str, dict]  # selection -> {"epoch", "value", "state"}
    resumed_from_epoch: int
    stopped_early: bool


def fit(
    method,
    cohort: Cohort,
    settings: TrainSettings,
    augment: AugmentSettings,
    device: torch.device,
    resume_path: str | Path,
    fingerprint: str,
    tensorboard_dir: str | Path | None = None,
    progress: bool = True,
    label: str = "",
    fold_table: str | Path | None = None,
    task=None,
) -> FitResult:
    """Train ``method.model`` on the cohort's train part, validating every epoch; resumes
    from ``resume_path`` when it holds a run with the same ``fingerprint``. ``task``
    (:mod:`neuroadapt.tasks`, binary classification by default) makes the batches, the
    validation metrics and the selections."""
    task = task or task_for("binary")
    ranks = current_ranks()
    model = method.model.to(device)
    optimizer = method.optimizer(settings.weight_decay)
    train_idx, val_idx = cohort.indices("train"), cohort.indices("validation")
    if not len(val_idx):
        raise InputError(
            fold_table, "has no validation part", "set splits.validation_fraction above 0"
        )
    augmenter = Augmenter(augment)
    state = {
        "epoch": 0,
        "history": [],
        "selected": {},
        "best_val_loss": math.inf,
        "bad_epochs": 0,
    }
    resume_path = Path(resume_path)
    resumed_from = 0
    if resume_path.is_file():
        saved = torch.load(resume_path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            resumed_from = state["epoch"]
            log.info("%s: resuming after epoch %d from %s", label, resumed_from, resume_path)
        else:
            log.info("%s: ignoring %s (written with other settings)", label, resume_path)
    if settings.adapt_batchnorm and state["epoch"] == 0 and ranks.main:
        # rank 0's statistics go to every rank when DDP wraps the model, just below
        adapt_batchnorm(
            model,
            lambda index: task.model_inputs(cohort, train_idx[index], device),
            len(train_idx),
            settings.batch_size,
        )
    trained = wrap(model, device, ranks)
    reader = BatchReader(cohort.images, settings.loader_workers, device.type == "cuda")
    writer = _tensorboard(tensorboard_dir, state["history"]) if ranks.main else None
    stopped_early = state["bad_epochs"] >= settings.patience
    bar = tqdm(
        range(state["epoch"], settings.epochs),
        initial=state["epoch"],
        total=settings.epochs,
        desc=label,
        file=sys.stderr,
        disable=not (progress and ranks.main),
        mininterval=5,
    )
    for epoch in bar:
        if stopped_early:
            break
        started = time.perf_counter()
        model.train()
        epoch_seed = settings.seed * 1_000_003 + epoch
        augmenter.seed(epoch_seed)
        losses = []
        batches = epoch_batches(len(train_idx), settings.batch_size, epoch_seed, ranks.world)
        for index, images in reader.epoch([train_idx[batch.numpy()] for batch in batches]):
            part = ranks.share(len(index)) if ranks.parallel else None
            loss = task.train_loss(
                method, trained, cohort, index, augmenter, device, settings.bf16, part, images
            )
            if part is not None:  # DDP averages over ranks: weigh each by its share
                loss = loss * (len(part) * ranks.world / len(index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(summed(float(loss.detach()), ranks) / ranks.world)
        row = None
        if ranks.main:  # rank 0 validates; every rank takes its row and decisions
            row = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                **task.validate(
                    method, model, cohort, val_idx, device, settings.batch_size, settings.bf16
                ),
            }
            row["seconds"] = time.perf_counter() - started
        row = from_rank0(row, ranks)
        state["history"].append(row)
        for selection, key in task.selections.items():
            # Ties (frequent on small validation parts) go to the lower validation loss.
            best = state["selected"].get(selection)
            score = (row[key], -row["val_loss"])
            if np.isfinite(row[key]) and (
                best is None or score > (best["value"], -best["val_loss"])
            ):
                state["selected"][selection] = {
                    "epoch": epoch + 1,
                    "value": row[key],
                    "val_loss": row["val_loss"],
                    "state": trainable_state(model),
                }
        if row["val_loss"] < state["best_val_loss"] - settings.min_delta:
            state["best_val_loss"], state["bad_epochs"] = row["val_loss"], 0
        else:
            state["bad_epochs"] += 1
        stopped_early = state["bad_epochs"] >= settings.patience
        state["epoch"] = epoch + 1
        if ranks.main:
            _save_resume(resume_path, fingerprint, model, optimizer, state)
        if writer is not None:
            _log_scalars(writer, row)
        bar.set_postfix(
            loss=f"{row['train_loss']:.3f}", val_loss=f"{row['val_loss']:.3f}", refresh=False
        )
    bar.close()
    if writer is not None:
        writer.close()
    if any(selection not in state["selected"] for selection in task.selections):
        raise InputError(fold_table, *task.no_selection_fix())
    return FitResult(state["history"], state["selected"], resumed_from, stopped_early)


def adapt_batchnorm(
    model: torch.nn.Module, inputs: Callable[[np.ndarray], object], n: int, batch_size: int
) -> None:
    """AdaBN: replace every BatchNorm layer's running mean/variance by their average over
    the ``n`` training samples (the target domain; ``inputs(index)`` gives the model's input
    for an index array), in one gradient-free pass.

    A backbone frozen with statistics of another modality (CT) can map every MRI volume to
    nearly the same features; re-estimated statistics restore their spread. Hand-written:
    neither MONAI nor peft has it; it relies on PyTorch's cumulative average (momentum None).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    # A lone last sample joins the chunk before it (as in epoch_batches): BatchNorm in
    # training mode cannot take one sample whose deepest map is 1x1x1.
    bounds = [*range(0, n, batch_size), n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    with torch.no_grad():
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            model(inputs(np.arange(start, stop)))
    for m, (momentum, training) in zip(norms, saved, strict=True):
        m.momentum = momentum
        m.train(training)


def save_atomically(payload, path: str | Path) -> None:
    """``torch.save`` under a temporary name, then a rename: a kill mid-write leaves the
    previous file (or none) in place, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    torch.save(payload, staging)
    os.replace(staging, path)


def _save_resume(path: Path, fingerprint: str, model, optimizer, state: dict) -> None:
    """The whole training state, so a killed job restarts after its last finished epoch."""
    payload = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": state,
    }
    save_atomically(payload, path)


def _tensorboard(directory, history: Sequence[dict]):
    """A SummaryWriter on a fresh folder, replaying the epochs a resumed run already did."""
    if directory is None:
        return None
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(directory, ignore_errors=True)
    writer = SummaryWriter(str(directory))
    for row in history:
        _log_scalars(writer, row)
    return writer


def _log_scalars(writer, row: Mapping) -> None:
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def fingerprint_of(config_slice: Mapping, files: Sequence[str | Path]) -> str:
    """SHA-256 over the run's settings and the bytes of its input tables: a resume file
    is only used by a run with the same settings and the same splits."""
    digest = hashlib.sha256(json.dumps(config_slice, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures: CUDA allocations on a GPU, the process's
    peak resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"


def run_training(
    *,
    experiment_name: str,
    experiment: Mapping,
    method_name: str,
    method_settings: Mapping | None,
    training: Mapping | None,
    backbone: Mapping,
    fold: int,
    subjects_table: str,
    fold_table: str,
    tensors: Sequence[str],
    out_dir: str,
    resume_path: str,
    masks: Sequence[str] | None = None,
    phase1_runs: Sequence[str | Path] | None = None,
    tensorboard_dir: str | None = None,
    threads: int = 1,
    device: str = "auto",
    repo_dir: str | Path = ".",
    progress: bool = True,
) -> dict:
    """The ``train`` rule: fit, select, predict the test part, write ``out_dir``.

    ``out_dir`` receives ``history.tsv``, ``predictions.tsv`` (fold, participant_id,
    session_id, selection, then per task: label and probability; for multilabel
    ``label_<name>`` then ``prob_<name>`` per label; or event, time, risk, dice and
    hd95_mm), ``model-<selection>.pt`` per selection (``best_acc``/``best_auc``;
    ``best_dice``/``best_cindex``), for segmentation ``segmentations-<selection>.npz`` (the
    test part's predicted masks) and ``run.json``. The resume file is removed once they are
    in place. ``phase1_runs``: the same fold's ``unimodal_<modality>`` run folders, for a
    method that builds on paper 4's phase 1 (their ``best_auc`` models are loaded).
    """
    from neuroadapt.cohort import load_cohort
    from neuroadapt.methods import get_method
    from neuroadapt.provenance import git_commit, package_versions
    from neuroadapt.tuning import trial_settings, tuned_method_settings, tuned_names

    where = f"experiments.{experiment_name}"
    settings, augment, tuning = training_settings(training, "training")
    ranks = current_ranks()
    torch.set_num_threads(max(1, int(threads) // ranks.world))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.cuda.reset_peak_memory_stats(dev)
    cohort = load_cohort(subjects_table, fold_table, tensors, experiment, where, masks)
    phase1 = phase1_states(phase1_runs or [], fold)
    task = task_for(experiment["task"], experiment["inputs"])
    method_cls = get_method(method_name) if tuning.enabled else None
    tuned = tuning.enabled and bool(tuned_names(method_cls, tuning))
    trials = trial_settings(method_cls, tuning) if tuned else [{}]
    base_slice = {
        "experiment": experiment_name,
        "method": method_name,
        "fold": fold,
        "experiment_config": dict(experiment),
        "method_settings": dict(method_settings or {}),
        "training": {**asdict(settings), "augment": asdict(augment)},
        "backbone": dict(backbone),
    }
    if phase1:  # the phase-1 models' bytes: a retrained one reruns this run from scratch
        base_slice["phase1"] = {m: PHASE1_SELECTION for m in sorted(phase1)}
    label = f"{experiment_name}/{method_name}/fold-{fold}"
    tuning_rows, best = [], None
    for number, values in enumerate(trials, start=1):
        method = build_method(
            method_name,
            backbone,
            cohort.images.shape[1],
            experiment["task"],
            tuned_method_settings(method_settings, values),
            settings.seed,
            f"{where}.methods",
            image_size=cohort.images.shape[2:],
            extra=cohort.extra,
            num_labels=len(cohort.label_names) or None,
            protocol={key: getattr(settings, key) for key in PROTOCOL},
            phase1=phase1,
        )
        config_slice = base_slice | (
            {"tuning": asdict(tuning), "trial": number, "tuned": values} if tuned else {}
        )
        result = fit(
            method,
            cohort,
            settings,
            augment,
            dev,
            trial_resume_path(resume_path, number) if tuned else resume_path,
            fingerprint_of(
                config_slice,
                [subjects_table, fold_table, *(phase1_model_file(r) for r in phase1_runs or [])],
            ),
            f"{tensorboard_dir}/trial-{number}" if tuned and tensorboard_dir else tensorboard_dir,
            progress,
            f"{label}/trial-{number}" if tuned else label,
            fold_table,
            task,
        )
        val_loss = min(row["val_loss"] for row in result.history)
        tuning_rows.append(
            {"trial": number, **values, "val_loss": val_loss, "epochs_run": len(result.history)}
        )
        if best is None or val_loss < best[0]:  # the first among equals
            best = (val_loss, number, method, result, config_slice)
    _, chosen_trial, method, result, config_slice = best
    if not ranks.main:  # rank 0 predicts and writes
        return {}
    for row in tuning_rows:
        row["chosen"] = row["trial"] == chosen_trial
    test = cohort.indices("test")
    predictions, artefacts, robustness = [], {}, []
    for selection in task.selections:
        load_trainable_state(method.model, result.selected[selection]["state"])
        columns, artefacts[selection] = task.predict(
            method, method.model, cohort, test, dev, settings.batch_size, settings.bf16
        )
        frame = cohort.ids.iloc[test].copy()
        frame.insert(0, "fold", fold)
        frame["selection"] = selection
        for name, values in columns.items():
            frame[name] = values
        predictions.append(frame)
        # removing a uni-modal model's only modality just gives 0.5: no robustness rows
        if isinstance(task, MultimodalClassificationTask) and not method_name.startswith(
            UNIMODAL_PREFIX
        ):
            missing = missing_modality_predictions(
                task,
                method,
                method.model,
                cohort,
                test,
                dev,
                settings.batch_size,
                settings.bf16,
                seed=settings.seed,
            )
            missing.insert(0, "fold", fold)
            missing.insert(len(cohort.ids.columns) + 1, "selection", selection)
            robustness.append(missing)
    memory, memory_kind = peak_memory(dev)
    seconds = [row["seconds"] for row in result.history]
    summary = {
        **config_slice,
        "seed": settings.seed,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "threads": int(threads),
        "processes": ranks.world,
        "versions": package_versions(VERSIONED),
        "code": git_commit(repo_dir),
        "method_description": (type(method).__doc__ or method_name).strip().splitlines()[0],
        "parameters": method.parameter_report().as_dict(),
        "samples": {
            role: int(len(cohort.indices(role))) for role in ("train", "validation", "test")
        },
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "seconds_per_epoch": float(np.mean(seconds)),
        "peak_memory_mib": memory,
        "memory_kind": memory_kind,
        "selected": {
            name: {"epoch": chosen["epoch"], "validation_value": chosen["value"]}
            for name, chosen in result.selected.items()
        },
        "tuning": {
            "trials": len(tuning_rows),
            "chosen_trial": chosen_trial,
            "chosen": dict(config_slice.get("tuned", {})),
        }
        if tuned
        else None,
    }
    with atomic_directory(out_dir) as staging:
        pd.DataFrame(result.history).to_csv(
            staging / "history.tsv", sep="\t", index=False, lineterminator="\n"
        )
        if tuned:
            pd.DataFrame(tuning_rows).to_csv(
                staging / "tuning.tsv", sep="\t", index=False, lineterminator="\n"
            )
        pd.concat(predictions).to_csv(
            staging / "predictions.tsv", sep="\t", index=False, na_rep="n/a", lineterminator="\n"
        )
        if robustness:
            pd.concat(robustness).to_csv(
                staging / MISSING_MODALITY_FILE,
                sep="\t",
                index=False,
                na_rep="n/a",
                lineterminator="\n",
            )
        for selection in task.selections:
            if "masks" in artefacts[selection]:
                np.savez_compressed(
                    staging / f"segmentations-{selection}.npz", **artefacts[selection]["masks"]
                )
            chosen = result.selected[selection]
            torch.save(
                {"state": chosen["state"], "epoch": chosen["epoch"], "method": method_name},
                staging / f"model-{selection}.pt",
            )
        (staging / "run.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    Path(resume_path).unlink(missing_ok=True)
    for number in range(1, len(trials) + 1):
        trial_resume_path(resume_path, number).unlink(missing_ok=True)
    return summary


def train_job(processes: int = 1, log_file: str | None = None, **arguments) -> dict:
    """:func:`run_training` in ``processes`` data-parallel processes (DDP, one per GPU; on a
    machine without CUDA, CPU processes with gloo), or in this process for 1; ``log_file``
    gets rank 0's log records (this process's go wherever its logging is set). The results
    equal one process's within what per-process BatchNorm statistics change on the CPU (see
    :mod:`neuroadapt.distributed`)."""
    if processes < 1:
        raise ConfigError("resources.train.gpu", f"is {processes}", "ask for 1 GPU or more")
    if processes == 1:
        return run_training(**arguments)
    if torch.cuda.is_available() and torch.cuda.device_count() < processes:
        raise ConfigError(
            "resources.train.gpu",
            f"asks for {processes} GPUs but this job sees {torch.cuda.device_count()} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})",
            "ask SLURM for as many GPUs as the rule's gpu resource (the SLURM profile does), "
            "or lower the gpu resource of train",
        )
    return launch(processes, _training_on, arguments, log_file)


def _training_on(arguments: dict, device: torch.device) -> dict:
    return run_training(**arguments, device=str(device))


#: The phase-1 model phase 2 builds on: the epoch of best validation AUC.
PHASE1_SELECTION = "best_auc"


def phase1_model_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / f"model-{PHASE1_SELECTION}.pt"


def phase1_states(run_dirs: Sequence[str | Path], fold: int) -> dict[str, dict]:
    """Modality -> trained state of its phase-1 run (``.../unimodal_<modality>/fold-<k>``),
    checked to be of ``fold``."""
    states = {}
    for run_dir in run_dirs:
        path = phase1_model_file(run_dir)
        summary = Path(run_dir) / "run.json"
        if not path.is_file() or not summary.is_file():
            raise InputError(path, "is missing", "rerun that unimodal_* train job")
        info = json.loads(summary.read_text())
        method = str(info.get("method", ""))
        if not method.startswith(UNIMODAL_PREFIX) or int(info.get("fold", -1)) != int(fold):
            raise InputError(
                summary,
                f"is run {method} fold {info.get('fold')}, not a phase-1 model of fold {fold}",
                "give the unimodal_<modality> runs of the same fold",
            )
        saved = torch.load(path, map_location="cpu", weights_only=True)
        states[method.removeprefix(UNIMODAL_PREFIX)] = saved["state"]
    return states


def trial_resume_path(resume_path: str | Path, trial: int) -> Path:
    """The resume file of one tuning trial beside the run's (``fold-1.pt`` ->
    ``fold-1.trial-2.pt``): a requeued job skips finished trials and resumes the current one."""
    path = Path(resume_path)
    return path.with_name(f"{path.stem}.trial-{trial}{path.suffix}")
