"""The HTML result report: one self-contained file (figures and styles inline).

:func:`build_report` reads what the workflow wrote (subjects tables, QC tables and figures,
splits, metrics, resources, run summaries), makes the report's figures and renders
``templates/report.html`` with Jinja2. Sections appear only for what the configuration ran;
experiments that trained nothing are listed as such. An experiment's ``task`` picks its
results section: classification scores (:func:`results_section`), for ``multilabel`` macro
AUC and per-label AUC (:func:`neuroadapt.report.multilabel.multilabel_section`) or, when the
task contains ``segmentation`` or ``survival``, C-index / Dice / HD95, Kaplan-Meier curves
and example segmentations (:func:`neuroadapt.report.segsurv.segsurv_section`).
Per-subject QC figures are linked (relative paths, so the links work wherever the results
folder is opened) and a few are embedded.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from neuroadapt.experiments import experiment_methods, phase1_modalities
from neuroadapt.io import atomic_write_text
from neuroadapt.method_cards import method_cards
from neuroadapt.metrics import BINARY_METRICS
from neuroadapt.report import figures
from neuroadapt.report.attribution import attribution_section
from neuroadapt.report.cells import comparison, interval
from neuroadapt.report.figures import data_uri
from neuroadapt.report.multilabel import is_multilabel, multilabel_section
from neuroadapt.report.segsurv import is_segmentation_survival, segsurv_section
from neuroadapt.report.summary import summary_section
from neuroadapt.subjects import read_subjects_table

__all__ = ["build_report", "methods_paragraph"]

TEMPLATE = Path(__file__).parent / "templates" / "report.html"
EMBEDDED_QC_FIGURES = 3  # per dataset, besides every flagged outlier (up to 6)


def file_uri(path: str | Path) -> str:
    return data_uri(Path(path).read_bytes())


def _link(path: str | Path, report_dir: Path) -> str:
    return os.path.relpath(Path(path).resolve(), report_dir.resolve())


def cohort_section(name: str, dataset: Mapping, paths: Mapping) -> dict:
    """Subjects, label balance and demographics of one dataset."""
    table = read_subjects_table(paths["subjects"])
    label = dataset.get("label")
    section = {"name": name, "rows": len(table), "subjects": table.participant_id.nunique()}
    if label and label in table.columns:
        section["labels"] = table[label].value_counts().sort_index().to_dict()
        section["label"] = label
    if "age" in table.columns:
        age = pd.to_numeric(table.age, errors="coerce")
        section["age"] = f"{age.mean():.1f} ± {age.std():.1f}"
    for column in ("sex", "site"):
        if column in table.columns:
            section[column] = table[column].value_counts().sort_index().to_dict()
    return section


#: The order of a fold's roles in the report's tables.
ROLE_ORDER = ("train", "validation", "test")


def _role_rank(role: str) -> int:
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)


def shared_folds(splits: Sequence[Mapping]) -> list[dict]:
    """Experiments whose folds are the same (the same subjects in every fold and role) and
    whose tables are the same (same target) are shown once, under all their names."""
    groups: dict[str, dict] = {}
    for entry in splits:
        key = json.dumps([entry["assignments"], entry["rows"]], sort_keys=True)
        if key in groups:
            groups[key]["name"] += f", {entry['name']}"
        else:
            groups[key] = dict(entry)
    return list(groups.values())


def fold_assignments(splits_dir: Path) -> list[list[str]]:
    """Every fold's (participant, role) pairs, sorted: equal for experiments sharing folds."""
    return [
        sorted(
            "\t".join(pair)
            for pair in pd.read_csv(path, sep="\t", dtype=str)[["participant_id", "role"]].values
        )
        for path in sorted(splits_dir.glob("fold-*.tsv"), key=lambda p: int(p.stem[5:]))
    ]


def fold_balance(experiment: Mapping, splits_dir: Path, subjects: pd.DataFrame) -> list[dict]:
    """Per fold and role: subjects, classes of the target (events for survival) and mean age."""
    target = experiment["target"]
    # a segmentation target (gtv) is a mask path per row: the classes worth showing are events
    if experiment.get("survival"):
        target = experiment["survival"]["event"]
    rows = []
    for fold_file in sorted(splits_dir.glob("fold-*.tsv"), key=lambda p: int(p.stem[5:])):
        fold = pd.read_csv(fold_file, sep="\t", dtype=str).merge(
            subjects.drop_duplicates("participant_id"), on="participant_id"
        )
        for role, part in sorted(fold.groupby("role"), key=lambda item: _role_rank(item[0])):
            row = {"fold": fold_file.stem[5:], "role": role, "n": len(part)}
            if isinstance(target, str) and target in part.columns:
                counts = part[target].value_counts().sort_index()
                row["classes"] = ", ".join(f"{k}: {v}" for k, v in counts.items())
            elif isinstance(target, list) and set(target) <= set(part.columns):
                # multilabel: the subjects with each finding
                row["classes"] = ", ".join(
                    f"{c}: {int((part[c].astype(str) == '1').sum())}" for c in target
                )
            if "age" in part.columns:
                row["age"] = f"{pd.to_numeric(part.age, errors='coerce').mean():.1f}"
            rows.append(row)
    return rows


def dwi_qc_section(
    name: str,
    qc_paths: Sequence[str],
    figures_: Sequence[str],
    motion: Sequence[str],
    report_dir: Path,
) -> dict:
    """Diffusion QC table (linking each subject's FA/MD and motion figures), distributions,
    and a few embedded FA/MD figures (the first subjects and the flagged ones)."""
    table = pd.concat([pd.read_csv(p, sep="\t") for p in qc_paths], ignore_index=True)
    table["figure"] = [_link(f, report_dir) for f in figures_]
    table["motion_figure"] = [_link(f, report_dir) for f in motion]
    flagged = table.index[table.outlier.astype(int) == 1].tolist()
    embed = sorted(set(range(min(EMBEDDED_QC_FIGURES, len(table)))) | set(flagged[:6]))
    return {
        "name": name,
        "table": table.round(3).to_dict("records"),
        "flagged": int(len(flagged)),
        "summary": data_uri(
            figures.qc_distributions(
                table,
                {
                    "mean_fd": "mean framewise displacement (mm)",
                    "b0_snr": "b0 SNR",
                    "mean_fa": "mean FA in the mask",
                },
                f"{name}: diffusion QC",
            )
        ),
        "embedded": [
            {"participant": table.participant[i], "uri": file_uri(figures_[i])} for i in embed
        ],
    }


def petct_qc_section(
    name: str, xfm_paths: Sequence[str], figures_: Sequence[str], report_dir: Path
) -> dict:
    rows = []
    for path, figure in zip(xfm_paths, figures_, strict=True):
        info = json.loads(Path(path).read_text())
        rows.append(
            {
                "participant": Path(path).name.split("_from-")[0],
                "metric": round(float(info["FinalMetricValue"]), 3),
                "iterations": info.get("Iterations"),
                "figure": _link(figure, report_dir),
            }
        )
    return {
        "name": name,
        "table": rows,
        "embedded": [
            {"participant": rows[i]["participant"], "uri": file_uri(figures_[i])}
            for i in range(min(EMBEDDED_QC_FIGURES, len(rows)))
        ],
    }


def results_section(name: str, experiment: Mapping, paths: Mapping) -> dict:
    """Metrics table, ROC curves, per-fold scores and parameters vs AUC of one experiment."""
    metrics = pd.read_csv(paths["metrics"], sep="\t")
    folds = pd.read_csv(paths["folds"], sep="\t")
    predictions = pd.read_csv(paths["predictions"], sep="\t")
    resources = pd.read_csv(paths["resources"], sep="\t")
    runs = [json.loads(Path(p).read_text()) for p in paths["runs"]]
    methods = experiment_methods(experiment)  # with paper 4's phase-1 models
    descriptions = {r["method"]: r.get("method_description", "").replace("``", "") for r in runs}
    table = []
    for _, row in metrics.iterrows():
        entry = {"method": row.method, "selection": row.selection, "n": int(row.n)}
        entry |= {metric: interval(row, metric) for metric in BINARY_METRICS}
        entry["fold_auc"] = f"{row.auc_fold_mean:.3f} ± {row.auc_fold_sd:.3f}"
        entry |= comparison(row, "delta_auc")
        table.append(entry)
    return {
        "name": name,
        "kind": "binary",
        "reference": str(metrics.reference.iloc[0]),
        "table": table,
        "resources": [
            r | {"description": descriptions.get(r["method"], "")}
            for r in resources.round(4).to_dict("records")
        ],
        "roc": data_uri(figures.roc_curves(predictions, metrics, methods)),
        "folds": data_uri(figures.fold_scores(folds, methods)),
        "cost": data_uri(figures.parameters_vs_auc(metrics, resources, "best_auc")),
        "missing_modality": _missing_modality(paths, methods),
    } | _provenance(runs)


def _missing_modality(paths: Mapping, methods: Sequence[str]) -> str | None:
    """The figure of AUC against missing modalities (best-AUC selection), when the
    experiment's methods are multimodal."""
    path = paths.get("missing_modality")
    table = pd.read_csv(path, sep="\t") if path else pd.DataFrame()
    if table.empty:
        return None
    return data_uri(figures.missing_modality_curves(table, list(methods), "best_auc"))


def _provenance(runs: Sequence[Mapping]) -> dict:
    """Device, package versions and code state of an experiment's (first) run."""
    return {
        "device": runs[0]["device"] if runs else "",
        "versions": runs[0]["versions"] if runs else {},
        "code": runs[0]["code"] if runs else {},
    }


def methods_paragraph(config: Mapping) -> str:
    """A methods paragraph describing what the configuration ran (as QSIPrep writes one)."""
    from neuroadapt import __version__

    dwi = config.get("dwi", {})
    parts = [f"Data were processed with neuroadapt {__version__}."]
    if any(set(e["inputs"]) & {"fa", "md", "ad", "rd"} for e in config["experiments"].values()):
        denoise = dwi.get("denoise", {})
        steps = [f"denoising ({denoise.get('method', 'mppca')})"]
        if dwi.get("unring", {}).get("enabled"):
            steps.append("Gibbs unringing")
        if dwi.get("bias", {}).get("enabled", True):
            steps.append("N4 bias-field correction")
        if dwi.get("motion", {}).get("enabled", True):
            steps.append("rigid head-motion correction with b-vector rotation")
        tensor = dwi.get("tensor", {})
        shape = "x".join(str(v) for v in dwi.get("model_ready", {}).get("shape", [32, 32, 32]))
        parts.append(
            "Diffusion-weighted images underwent "
            + ", ".join(steps)
            + f", brain masking and a {tensor.get('fit_method', 'WLS')} diffusion-tensor fit on "
            f"b ≤ {tensor.get('max_bval', 1200)} s/mm²; FA and MD maps were cropped to the brain "
            f"and resampled to {shape} voxels."
        )
    if any({"ct", "pet"} <= set(e["inputs"]) for e in config["experiments"].values()):
        registration = config.get("petct", {}).get("registration", {})
        parts.append(
            "PET was converted to SUV and registered to CT with a "
            f"{registration.get('transform', 'rigid')} mutual-information registration; both "
            "were resampled onto a common box around the tumour."
        )
    training = config.get("training", {})
    for name, experiment in config["experiments"].items():
        if not experiment.get("methods"):
            continue
        folds = (experiment.get("splits") or {}).get("folds", 5)
        backbone = experiment.get("backbone")
        backbone = backbone if isinstance(backbone, str) else (backbone or {}).get("name")
        if is_segmentation_survival(experiment):
            parts.append(_segsurv_methods(name, experiment, backbone, folds, training))
            continue
        parts.append(_recipe_sentence(config, name, backbone))
        if is_multilabel(experiment):
            threshold = config.get("evaluation", {}).get("threshold", 0.5)
            parts.append(
                f"For {name}, {', '.join(experiment['methods'])} adapted a {backbone} backbone "
                f"to detect {len(experiment['target'])} findings "
                f"({', '.join(experiment['target'])}; one sigmoid output each, binary "
                f"cross-entropy) in {folds}-fold subject-level cross-validation stratified "
                "iteratively over the findings (up to "
                f"{training.get('epochs', 50)} epochs, early stopping after "
                f"{training.get('patience', 10)} epochs without validation-loss improvement, "
                "AdamW); models were selected by validation mean per-label accuracy and by "
                "validation macro AUC, and evaluated on out-of-fold predictions (macro and "
                "per-label AUC, macro F1, subset accuracy, mean per-label balanced accuracy at "
                f"probability {threshold:g}) with bootstrap 95% intervals and paired bootstrap "
                "comparisons of macro AUC against the reference method."
            )
            continue
        if "report_text" in experiment["inputs"]:
            parts.append(_text_encoder_sentence(name, experiment))
        if phase1_modalities(experiment):
            parts.append(_phase1_sentence(name, experiment))
        parts.append(
            f"For {name}, {', '.join(experiment['methods'])} adapted a {backbone} backbone "
            f"to predict {experiment['target']} in {folds}-fold subject-level stratified "
            f"cross-validation (up to {training.get('epochs', 50)} epochs, early stopping after "
            f"{training.get('patience', 10)} epochs without validation-loss improvement, "
            "AdamW); models were selected by validation accuracy and by validation AUC, and "
            "evaluated on out-of-fold predictions with bootstrap 95% intervals and paired "
            "bootstrap comparisons of AUC against the reference method."
        )
    return " ".join(parts)


def _phase1_sentence(name: str, experiment: Mapping) -> str:
    """Paper 4's phase 1, as the experiment ran it."""
    modalities = phase1_modalities(experiment)
    cards = method_cards()
    later = [m for m in experiment["methods"] if m in cards and cards[m].uses_phase1]
    return (
        f"For {name}, paper 4's phase 1 fine-tuned one uni-modal model per modality "
        f"({', '.join(modalities)}: its encoder with the experiment's head) on that modality "
        "alone in each fold, selected it by validation AUC and froze it; "
        f"{', '.join(later)} started from those encoders and heads of the same fold. The "
        "uni-modal models are reported as unimodal_<modality>; the non-image encoders had no "
        "pretrained weights, so phase 1 trained them from their initialisation."
    )


def _text_encoder_sentence(name: str, experiment: Mapping) -> str:
    """What the reports of a multimodal experiment were encoded with: a stand-in says so."""
    encoder = experiment.get("text_encoder") or {}
    if encoder.get("kind", "hashing") == "hashing":
        return (
            f"For {name}, reports were encoded with a deterministic hashing stand-in (words "
            "hashed to vectors; no pretrained language model), so report features carry the "
            "reports' words, not their meaning as a pretrained encoder (paper 2: LLaMA-2 7B) "
            "would."
        )
    return (
        f"For {name}, reports were encoded once with the frozen pretrained model in "
        f"{encoder.get('path')} (Hugging Face)."
    )


#: Paper 1's Table 1 counts, which its stated architecture does not reproduce.
PAPER1_COUNTS = (
    "Paper 1 reports 185.57M trainable parameters for full fine-tuning and 1.64M for LoRA; "
    "the architecture it states (ResNet-50 x2 of the CT foundation model, LoRA of rank 4 on "
    "every 3D convolution, a 128-unit head) has 185,046,273 and 1,705,401, the counts given "
    "here."
)


def _recipe_sentence(config: Mapping, name: str, backbone: str | None) -> str:
    """How the experiment's methods were trained alike: head, and tuning or fixed settings."""
    from neuroadapt.train_settings import merged_training, training_settings

    settings, _, tuning = training_settings(merged_training(config, name), "training")
    head = (
        "a linear head"
        if settings.head_hidden is None
        else f"the same {settings.head_hidden}-unit MLP head"
    )
    sentence = f"Every method of {name} trained {head} with the same epochs, batch size, "
    sentence += "augmentation and early stopping"
    if settings.adapt_batchnorm:
        sentence += ", BatchNorm statistics re-estimated on the training part (AdaBN)"
    if settings.train_norms:
        sentence += (
            "; the methods that adapt a frozen backbone (LoRA, DoRA, MoLRE) also trained its "
            "BatchNorm scale and shift (per-channel gains that a low-rank update cannot express)"
        )
    sentence += "; "
    if tuning.enabled:
        rank = f" and the rank r in [{tuning.rank[0]}, {tuning.rank[1]}]" if tuning.rank else ""
        shared = ", one value for all of a method's parameter groups" if tuning.shared_lr else ""
        sentence += (
            f"each method's learning rates (log-uniform in [{tuning.lr[0]:g}, {tuning.lr[1]:g}]"
            f"{shared}){rank} were chosen per fold among {tuning.trials} quasi-random (Sobol) "
            "trials by "
            "the lowest validation loss, on the validation part of the training data only."
        )
    else:
        sentence += "learning rates were fixed per method (method_settings)."
    if backbone == "resnet50_w2":
        sentence += " " + PAPER1_COUNTS
    return sentence


def _segsurv_methods(
    name: str, experiment: Mapping, backbone: str | None, folds: int, training: Mapping
) -> str:
    """The methods sentence of a segmentation and/or survival experiment."""
    task = str(experiment["task"])
    goals, selections, scores = [], [], []
    if "segmentation" in task:
        goals.append("segment the gross tumour volume")
        selections.append("validation Dice")
        scores.append("Dice and 95th-percentile Hausdorff distance (mm)")
    if "survival" in task:
        goals.append("predict a risk score of survival (Cox partial likelihood)")
        selections.append("validation C-index")
        scores.insert(0, "Harrell's C-index")
    return (
        f"For {name}, {', '.join(experiment['methods'])} adapted a {backbone} backbone to "
        f"{' and to '.join(goals)} in {folds}-fold subject-level cross-validation (up to "
        f"{training.get('epochs', 50)} epochs, early stopping after "
        f"{training.get('patience', 10)} epochs without validation-loss improvement, AdamW); "
        f"models were selected by {' and by '.join(selections)}, and evaluated on "
        f"out-of-fold predictions ({', '.join(scores)}) with bootstrap 95% intervals"
        + (
            ", paired bootstrap comparisons of C-index against the reference method, and "
            "log-rank tests of Kaplan-Meier curves split at each fold's median predicted risk."
            if "survival" in task
            else "."
        )
    )


def build_report(
    config: Mapping, layout: Mapping, out_path: str | Path, template: str | Path = TEMPLATE
) -> None:
    """Render the report of ``config`` from the files in ``layout`` to ``out_path``.

    ``layout``: ``datasets`` {name: {subjects}}, ``dwi_qc`` / ``petct_qc`` {dataset:
    {tables, figures}}, ``experiments`` {name: {splits, metrics, folds, predictions,
    resources, runs}} (the last five only for experiments that trained). ``template``: a
    Jinja2 template (the packaged one by default; a site may bring its own).
    """
    template = Path(template)
    out_path = Path(out_path)
    report_dir = out_path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    cohorts = [
        cohort_section(name, config["datasets"][name], paths)
        for name, paths in layout["datasets"].items()
    ]
    splits, results, missing, summaries, attributions = [], [], [], [], []
    for name, paths in layout["experiments"].items():
        experiment = config["experiments"][name]
        subjects = read_subjects_table(layout["datasets"][experiment["dataset"]]["subjects"])
        splits_dir = Path(paths["splits"])
        splits.append(
            {
                "name": name,
                "rows": fold_balance(experiment, splits_dir, subjects),
                "assignments": fold_assignments(splits_dir),
                "balance": file_uri(splits_dir / "balance.png"),
            }
        )
        runs = [json.loads(Path(p).read_text()) for p in paths.get("runs", [])]
        if "metrics" in paths:
            metrics, resources = (pd.read_csv(paths[k], sep="\t") for k in ("metrics", "resources"))
            summaries.append(summary_section(name, experiment, metrics, resources, runs))
        if "metrics" in paths and is_segmentation_survival(experiment):
            section = segsurv_section(name, experiment, paths, runs) | _provenance(runs)
            results.append(section)
            missing += [f"{name}: {note}" for note in section["notes"]]
        elif "metrics" in paths and is_multilabel(experiment):
            threshold = config.get("evaluation", {}).get("threshold", 0.5)
            section = multilabel_section(name, experiment, paths, runs) | _provenance(runs)
            results.append(section | {"threshold": threshold})
        elif "metrics" in paths:
            results.append(results_section(name, experiment, paths))
        else:
            missing.append(f"{name}: no methods configured, so nothing was trained (splits only)")
        attribution = attribution_section(name, paths)
        if attribution is not None:
            attributions.append(attribution)
    html = (
        jinja2.Environment(
            loader=jinja2.FileSystemLoader(template.parent),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        .get_template(template.name)
        .render(
            generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            cohorts=cohorts,
            splits=shared_folds(splits),
            dwi_qc=[
                dwi_qc_section(name, qc["tables"], qc["figures"], qc["motion"], report_dir)
                for name, qc in layout.get("dwi_qc", {}).items()
            ],
            petct_qc=[
                petct_qc_section(name, qc["tables"], qc["figures"], report_dir)
                for name, qc in layout.get("petct_qc", {}).items()
            ],
            results=results,
            attributions=attributions,
            summaries=summaries,
            missing=missing,
            methods_paragraph=methods_paragraph(config),
            config_yaml=yaml.safe_dump(dict(config), sort_keys=False),
            commands=[
                "snakemake --cores all                      # rerun what changed",
                "snakemake --profile slurm                  # the same on a SLURM cluster",
                "snakemake --forcerun train --until evaluate  # retrain and re-evaluate",
                "snakemake --forcerun report                # this report only",
            ],
        )
    )
    atomic_write_text(out_path, html)
