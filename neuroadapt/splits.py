"""Subject-level, stratified, leakage-checked cross-validation folds.

Every session of a subject lands in one role (train / validation / test) of a fold. Test
parts come from one of four strategies, chosen by the experiment's task and settings:

* **stratified** (binary, multi-class, survival, segmentation): within each stratum the
  subjects are ordered by a seeded hash of their ID and cut into ``folds`` contiguous chunks.
  Strata are the class (survival: event status x time quantile bin). Each fold gets the
  ideal share of every stratum to within one subject, and, because the hash of an ID never
  changes, adding one subject moves at most ``folds - 1`` others, each to a neighbouring
  chunk of its own stratum (scikit-learn's StratifiedKFold reshuffles every subject, which is
  why this part is written by hand). For survival, a new subject can also shift time-bin
  edges, and the subjects crossing an edge move too.
* **multilabel** (several 0/1 target columns): iterative stratification (Sechidis et al.
  2011) from the ``iterative-stratification`` package.
* **grouped** (``group_by: site``): scikit-learn's StratifiedGroupKFold; no group is split
  across roles, and the validation part of fold k is the test part of fold k+1.
* **leave-group-out** (``leave_group_out: true``): one fold per group value.

A validation part is then carved from each training part (stratified, in hash order, the
configured fraction), unless the strategy defines it. With ``test_fraction`` a fixed test set
is held out once, and the folds split the rest into train and validation.

Demographic balance as ClinicaDL checks it: in each fold, age (Welch t-test) and sex
(chi-square) of the training part against the test and validation parts; if any p-value is
below the threshold, everything is drawn again with a derived seed, up to ``max_attempts``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from neuroadapt.errors import ConfigError, InputError
from neuroadapt.io import atomic_directory

log = logging.getLogger(__name__)

ROLES = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitSettings:
    """``experiments.<name>.splits`` of the config (defaults: paper 1's five folds)."""

    folds: int = 5
    seed: int = 42
    validation_fraction: float = 0.2
    test_fraction: float = 0.0
    group_by: str | None = None
    leave_group_out: bool = False
    survival_time_bins: int = 3
    age_column: str | None = "age"
    sex_column: str | None = "sex"
    p_threshold: float = 0.2
    max_attempts: int = 50
    # Absent age/sex columns skip their balance check with a warning; true makes them required.
    require_balance_columns: bool = False

    def check(self, where: str) -> None:
        if self.folds < 2:
            raise ConfigError(
                f"{where}.folds", f"{self.folds} folds cannot cross-validate", "use 2 or more"
            )
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"{where}.validation_fraction", "must lie in (0, 1)", "use e.g. 0.2")
        if not 0 <= self.test_fraction < 1:
            raise ConfigError(
                f"{where}.test_fraction",
                "must lie in [0, 1)",
                "use 0 (no fixed test set) or e.g. 0.2",
            )
        if self.leave_group_out and not self.group_by:
            raise ConfigError(
                f"{where}.leave_group_out", "needs the group column", "set group_by: site"
            )
        if self.leave_group_out and self.test_fraction:
            raise ConfigError(
                f"{where}.test_fraction",
                "cannot be combined with leave_group_out",
                "the left-out group is the test set; set test_fraction: 0",
            )
        if self.survival_time_bins < 1:
            raise ConfigError(f"{where}.survival_time_bins", "must be at least 1", "use e.g. 3")
        if not 0 <= self.p_threshold < 1:
            raise ConfigError(
                f"{where}.p_threshold", "must lie in [0, 1)", "use e.g. 0.2 (0 disables the check)"
            )
        if self.max_attempts < 1:
            raise ConfigError(f"{where}.max_attempts", "must be at least 1", "use e.g. 50")


@dataclass
class Splits:
    """Role of every subject in every fold, and how it was obtained."""

    assignments: pd.DataFrame  # participant_id, fold (1-based), role
    subjects: pd.DataFrame  # one row per subject: participant_id, stratum, target, covariates
    seed_used: int
    attempts: list[dict] = field(default_factory=list)
    strategy: str = "stratified"

    def fold(self, k: int) -> pd.DataFrame:
        rows = self.assignments[self.assignments.fold == k]
        return rows[["participant_id", "role"]].merge(
            self.subjects[["participant_id", "stratum"]], on="participant_id"
        )


# --------------------------------------------------------------------------- subjects


def subject_table(
    rows: pd.DataFrame,
    target: str | list[str] | None,
    task: str,
    survival: dict | None,
    settings: SplitSettings,
    source: str = "subjects.tsv",
) -> pd.DataFrame:
    """One row per subject with its stratum, from subjects.tsv (one row per session).

    A subject whose sessions disagree on the target, or with a missing target, is an error:
    it cannot be placed on one side.
    """
    columns = _needed_columns(target, task, survival, settings)
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise InputError(
            source,
            f"has no column '{missing[0]}'",
            "add it to the dataset's covariates (or set the splits option that names it to null)",
        )
    if rows.empty:
        raise InputError(
            source,
            "has no subjects (empty cohort after filters)",
            "check the dataset's include/exclude lists and the ingestion report",
        )
    session_key = ["participant_id", *(["session_id"] if "session_id" in rows.columns else [])]
    repeated = rows[session_key][rows.duplicated(session_key)]
    if len(repeated):
        first = " ".join(str(v) for v in repeated.iloc[0])
        raise InputError(
            source,
            f"lists {first} more than once ({len(repeated)} duplicate row(s)): a duplicated "
            "subject could land on both sides of a split",
            "remove the duplicate rows (one row per subject and session)",
        )
    distinct = rows[["participant_id", *columns]].drop_duplicates()
    inconsistent = sorted(distinct.participant_id[distinct.participant_id.duplicated()].unique())
    if inconsistent:
        raise InputError(
            source,
            f"sessions of {', '.join(inconsistent[:5])} disagree on {', '.join(columns)}",
            "a subject's label and covariates must be the same in every session",
        )
    subjects = distinct.sort_values("participant_id", ignore_index=True)
    if settings.age_column:
        subjects[settings.age_column] = numeric_ages(
            subjects[settings.age_column], subjects.participant_id, settings.age_column, source
        )
    label_columns = _label_columns(target, task, survival)
    unlabelled = (
        subjects[subjects[label_columns].isna().any(axis=1)] if label_columns else subjects.iloc[:0]
    )
    if len(unlabelled):
        raise InputError(
            source,
            f"subjects {', '.join(unlabelled.participant_id[:5])} have no "
            f"{', '.join(label_columns)}",
            "fill in the values, or exclude those subjects in the dataset config",
        )
    subjects["stratum"] = _strata(subjects, target, task, survival, settings)
    return subjects


def balance_columns_present(
    settings: SplitSettings, columns, where: str, source: str
) -> SplitSettings:
    """``settings`` without the age/sex balance checks whose column the table lacks (a
    warning says which), unless ``require_balance_columns`` makes that an error."""
    changes = {}
    for key in ("age_column", "sex_column"):
        column = getattr(settings, key)
        if column and column not in columns:
            if settings.require_balance_columns:
                raise InputError(
                    source,
                    f"has no column '{column}' for the balance check ({where}.{key})",
                    f"add the column to participants.tsv, or set {where}.{key} to the column "
                    "that holds it",
                )
            log.warning(
                "%s: no column '%s'; the %s balance check of %s is skipped (name the column in "
                "%s.%s, or set %s.require_balance_columns: true to require it)",
                source,
                column,
                key.removesuffix("_column"),
                where,
                where,
                key,
                where,
            )
            changes[key] = None
    return replace(settings, **changes) if changes else settings


def numeric_ages(values: pd.Series, ids: pd.Series, column: str, source: str) -> pd.Series:
    """Ages as numbers. A top-coded age such as ``89+`` (de-identified data, e.g. HIPAA's
    90-and-over rule) counts as its bound, with a warning; any other text is an error."""
    text = values.astype("string").str.strip()
    top_coded = text.str.fullmatch(r"\d+(\.\d+)?\+", na=False)
    if top_coded.any():
        log.warning(
            "%s: %d %s value(s) such as '%s' are top-coded; the balance check counts each as "
            "its bound",
            source,
            int(top_coded.sum()),
            column,
            text[top_coded].iloc[0],
        )
    numbers = pd.to_numeric(text.where(~top_coded, text.str.rstrip("+")), errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise InputError(
            source,
            f"has {column} values that are not numbers: "
            + ", ".join(f"{i} '{v}'" for i, v in zip(ids[bad][:5], values[bad][:5], strict=True)),
            "write ages in years (n/a where unknown), or set age_column to null",
        )
    return numbers


def _label_columns(target, task, survival) -> list[str]:
    """participants.tsv columns holding the outcome (a segmentation target is a mask)."""
    columns = []
    if task in ("binary", "multiclass"):
        columns.append(target)
    elif task == "multilabel":
        columns += list(target)
    if survival:
        columns += [survival["time"], survival["event"]]
    return columns


def _needed_columns(target, task, survival, settings: SplitSettings) -> list[str]:
    columns = _label_columns(target, task, survival)
    for column in (settings.group_by, settings.age_column, settings.sex_column):
        if column and column not in columns:
            columns.append(column)
    return columns


def _strata(subjects: pd.DataFrame, target, task, survival, settings: SplitSettings) -> pd.Series:
    if task in ("binary", "multiclass"):
        return subjects[target].astype(str)
    if task == "multilabel":
        values = subjects[list(target)].astype(str)
        bad = ~values.isin(["0", "1"])
        if bad.any().any():
            column = bad.any().idxmax()
            who = subjects.participant_id[bad[column]].tolist()
            raise InputError(
                "subjects.tsv",
                f"multi-label target column '{column}' must hold 0 or 1; "
                f"{', '.join(map(str, who[:5]))} hold {values[column][bad[column]].iloc[0]!r}",
                "encode each label as its own 0/1 column in the dataset's participants.tsv",
            )
        return values.agg("".join, axis=1)
    if survival:
        event = pd.to_numeric(subjects[survival["event"]], errors="coerce")
        time = pd.to_numeric(subjects[survival["time"]], errors="coerce")
        if event.isna().any() or time.isna().any() or not event.isin([0, 1]).all():
            raise InputError(
                "subjects.tsv",
                f"'{survival['event']}' must be 0/1 and '{survival['time']}' numeric",
                "fix the survival columns of participants.tsv",
            )
        strata = pd.Series("", index=subjects.index)
        for status, members in time.groupby(event):
            bins = min(settings.survival_time_bins, len(members))
            ranks = members.rank(method="first")
            quantile = np.ceil(ranks * bins / len(members)).astype(int)
            strata[members.index] = [f"event{int(status)}_t{q}" for q in quantile]
        return strata
    return pd.Series("all", index=subjects.index)  # segmentation only: nothing to stratify


def class_labels(subjects: pd.DataFrame, target, task, survival) -> pd.Series:
    """The class each subject counts towards in the 'too few subjects per class' checks.
    Multi-label: one entry per subject and label (``<label>=0``/``<label>=1``), so each
    label's positives and negatives must spread over the folds, not each combination of
    labels (with many findings nearly every combination is unique; iterative stratification
    balances the labels one by one)."""
    if task in ("binary", "multiclass"):
        return subjects[target].astype(str)
    if survival:
        return subjects[survival["event"]].astype(str).radd("event=")
    if task == "multilabel":
        return pd.concat(
            [subjects[column].astype(str).radd(f"{column}=") for column in target],
            ignore_index=True,
        )
    return pd.Series("all", index=subjects.index)


# --------------------------------------------------------------------------- assignment


def _hash_order(ids, seed: int, purpose: str) -> np.ndarray:
    """A fixed pseudo-random rank per subject ID (independent of the other IDs)."""
    keys = [
        int.from_bytes(hashlib.sha256(f"{seed}:{purpose}:{pid}".encode()).digest()[:8], "big")
        for pid in ids
    ]
    return np.argsort(np.array(keys, dtype=np.uint64), kind="stable")


def _chunked_folds(subjects: pd.DataFrame, folds: int, seed: int, purpose: str) -> pd.Series:
    """Fold (0-based) of each subject: per stratum, contiguous chunks of the hash order."""
    fold = pd.Series(-1, index=subjects.index)
    strata = sorted(subjects.stratum.unique())
    for offset, stratum in enumerate(strata):
        members = subjects.index[subjects.stratum == stratum]
        order = members[_hash_order(subjects.participant_id[members], seed, purpose)]
        chunk = (np.arange(len(order)) * folds) // len(order)
        # Rotate by the stratum's rank so the larger chunks of different strata land in
        # different folds (fold sizes stay within a few subjects of each other).
        fold[order] = (chunk + offset) % folds
    return fold


def _carve(
    subjects: pd.DataFrame, candidates: pd.Index, fraction: float, seed: int, purpose: str
) -> pd.Index:
    """The first ``fraction`` of each stratum of ``candidates`` in hash order."""
    chosen = []
    for _, members in subjects.loc[candidates].groupby("stratum").groups.items():
        order = members[_hash_order(subjects.participant_id[members], seed, purpose)]
        chosen.extend(order[: int(round(fraction * len(order)))])
    return pd.Index(sorted(chosen))


def _carve_groups(
    subjects: pd.DataFrame, candidates: pd.Index, settings: SplitSettings, seed: int, purpose: str
) -> pd.Index:
    """Whole groups (``group_by``) of ``candidates`` in hash order until they hold at least
    ``validation_fraction`` of the candidates: a group is never split between training and
    validation. Not stratified (whole groups cannot be); at least one group is taken."""
    groups = subjects.loc[candidates, settings.group_by].astype(str)
    names = np.array(sorted(groups.unique()))
    order = names[_hash_order(pd.Series(names), seed, purpose)]
    wanted = settings.validation_fraction * len(candidates)
    chosen: list = []
    for name in order:
        if chosen and len(chosen) >= wanted:
            break
        chosen.extend(groups.index[groups == name])
    return pd.Index(sorted(chosen))


def _assign(
    subjects: pd.DataFrame, settings: SplitSettings, task: str, seed: int
) -> tuple[list[dict], str]:
    """Role of each subject (index) in each fold: a list of {index: role} per fold."""
    everyone = subjects.index
    held_out = pd.Index([])
    pool = everyone
    if settings.test_fraction:
        held_out = _carve(subjects, everyone, settings.test_fraction, seed, "test")
        pool = everyone.difference(held_out)

    if settings.leave_group_out:
        strategy = "leave-group-out"
        groups = subjects[settings.group_by].astype(str)
        parts = [subjects.index[groups == g] for g in sorted(groups.unique())]
    elif settings.group_by:
        from sklearn.model_selection import StratifiedGroupKFold

        strategy = "grouped"
        splitter = StratifiedGroupKFold(
            n_splits=settings.folds, shuffle=True, random_state=seed % 2**32
        )
        sub = subjects.loc[pool]
        parts = [
            sub.index[test]
            for _, test in splitter.split(sub, sub.stratum, sub[settings.group_by].astype(str))
        ]
    elif task == "multilabel":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        strategy = "multilabel"
        sub = subjects.loc[pool]
        labels = np.array([[int(c) for c in s] for s in sub.stratum])
        splitter = MultilabelStratifiedKFold(
            n_splits=settings.folds, shuffle=True, random_state=seed % 2**32
        )
        parts = [sub.index[test] for _, test in splitter.split(sub, labels)]
    else:
        strategy = "stratified"
        fold = _chunked_folds(subjects.loc[pool], settings.folds, seed, "fold")
        parts = [fold.index[fold == k] for k in range(settings.folds)]

    roles = []
    for k, part in enumerate(parts):
        if settings.test_fraction:
            validation, test = part, held_out
        elif strategy == "grouped":
            test = part
            validation = _carve_groups(
                subjects, pool.difference(part), settings, seed, f"validation{k}"
            )
        else:
            test = part
            rest = pool.difference(part)
            validation = _carve(
                subjects, rest, settings.validation_fraction, seed, f"validation{k}"
            )
        role = pd.Series("train", index=pool.union(held_out))
        role[validation] = "validation"
        role[test] = "test"
        roles.append(role)
    return roles, strategy


# --------------------------------------------------------------------------- checks


def check_feasible(
    subjects: pd.DataFrame, settings: SplitSettings, classes: pd.Series, where: str
) -> None:
    """Refuse requests no split can satisfy, naming the setting to change."""
    counts = classes.value_counts()
    if (counts < 2).any():
        lonely = counts.index[counts < 2][0]
        raise ConfigError(
            f"{where}.folds",
            f"class '{lonely}' has a single subject, so it cannot appear on both sides of a split",
            "add subjects of that class or exclude it from the dataset",
        )
    if settings.leave_group_out:
        n_groups = subjects[settings.group_by].nunique()
        if n_groups != settings.folds:
            raise ConfigError(
                f"{where}.folds",
                f"leave-group-out makes one fold per '{settings.group_by}' value "
                f"and there are {n_groups}",
                f"set folds: {n_groups}",
            )
        return
    pool = len(subjects) * (1 - settings.test_fraction)
    smallest = counts.min() * (1 - settings.test_fraction)
    if settings.folds > smallest:
        raise ConfigError(
            f"{where}.folds",
            f"{settings.folds} folds but class '{counts.idxmin()}' has only "
            f"{int(smallest)} subjects to spread over them",
            f"use at most {int(smallest)} folds, or add subjects",
        )
    if settings.group_by and subjects[settings.group_by].nunique() < settings.folds:
        raise ConfigError(
            f"{where}.folds",
            f"{settings.folds} folds but only "
            f"{subjects[settings.group_by].nunique()} '{settings.group_by}' groups",
            "use fewer folds or leave_group_out",
        )
    if pool < settings.folds:
        raise ConfigError(f"{where}.folds", "more folds than subjects", "use fewer folds")


def check_no_leakage(assignments: pd.DataFrame, subjects: pd.DataFrame, fixed_test: bool) -> None:
    """Fail on a subject with two roles in a fold, a subject missing from a fold, duplicate
    subjects, or (without a fixed test set) a subject not tested exactly once."""
    if subjects.participant_id.duplicated().any():
        duplicated = subjects.participant_id[subjects.participant_id.duplicated()].tolist()
        raise InputError(
            "splits",
            f"duplicate subjects {duplicated[:5]}",
            "remove the duplicates from subjects.tsv",
        )
    everyone = set(subjects.participant_id)
    for k, fold in assignments.groupby("fold"):
        twice = fold.participant_id[fold.participant_id.duplicated()].tolist()
        if twice:
            raise InputError(
                f"fold {k}", f"subjects {twice[:5]} have two roles (leakage)", "report this bug"
            )
        if set(fold.participant_id) != everyone:
            raise InputError(
                f"fold {k}", "does not cover every subject exactly once", "report this bug"
            )
        if (
            not set(fold.role) <= set(ROLES)
            or (fold.role == "test").sum() == 0
            or (fold.role == "train").sum() == 0
        ):
            raise InputError(
                f"fold {k}", "has an empty train or test part", "use fewer folds or more subjects"
            )
    tested = assignments[assignments.role == "test"].participant_id
    if not fixed_test:
        counts = tested.value_counts()
        never = sorted(everyone - set(counts.index))
        if never or (counts > 1).any():
            raise InputError(
                "splits",
                f"test parts do not cover every subject exactly once (never tested: "
                f"{never[:5]}, tested twice: {counts.index[counts > 1].tolist()[:5]})",
                "report this bug",
            )


# --------------------------------------------------------------------------- balance


def balance_statistics(subjects: pd.DataFrame, role: pd.Series, settings: SplitSettings) -> dict:
    """Age and sex of the training part against the validation and test parts (p-values)."""
    result = {}
    for other in ("validation", "test"):
        train = subjects.loc[role.index[role == "train"]]
        part = subjects.loc[role.index[role == other]]
        entry = {}
        if settings.age_column:
            a = pd.to_numeric(train[settings.age_column], errors="coerce").dropna()
            b = pd.to_numeric(part[settings.age_column], errors="coerce").dropna()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p = (
                    stats.ttest_ind(a, b, equal_var=False).pvalue
                    if len(a) > 1 and len(b) > 1
                    else 1.0
                )
            entry["age_p"] = 1.0 if np.isnan(p) else round(float(p), 6)
        if settings.sex_column:
            table = pd.crosstab(
                pd.concat([train, part])[settings.sex_column],
                ["train"] * len(train) + [other] * len(part),
            )
            entry["sex_p"] = _chi_square_p(table)
        result[f"train_vs_{other}"] = entry
    return result


def _chi_square_p(table: pd.DataFrame) -> float:
    if table.shape[0] < 2 or table.shape[1] < 2:
        return 1.0  # one sex only, or an empty part: nothing can be imbalanced
    return round(float(stats.chi2_contingency(table.to_numpy()).pvalue), 6)


def _worst_p(balance: list[dict]) -> float:
    values = [p for fold in balance for entry in fold.values() for p in entry.values()]
    return min(values) if values else 1.0


# --------------------------------------------------------------------------- main entry


def make_splits(
    subjects: pd.DataFrame,
    settings: SplitSettings,
    task: str,
    classes: pd.Series,
    where: str = "splits",
) -> Splits:
    """Draw folds until the demographic balance passes; raise when no attempt does."""
    subjects = subjects.reset_index(drop=True)
    classes = classes.reset_index(drop=True)
    check_feasible(subjects, settings, classes, where)
    attempts = []
    for attempt in range(settings.max_attempts):
        seed = settings.seed if attempt == 0 else _derived_seed(settings.seed, attempt)
        roles, strategy = _assign(subjects, settings, task, seed)
        balance = [balance_statistics(subjects, r, settings) for r in roles]
        worst = _worst_p(balance)
        attempts.append(
            {
                "attempt": attempt + 1,
                "seed": seed,
                "worst_p": worst,
                "passed": worst >= settings.p_threshold,
                "balance": balance,
            }
        )
        if worst >= settings.p_threshold:
            assignments = pd.concat(
                pd.DataFrame(
                    {
                        "participant_id": subjects.participant_id[r.index].to_numpy(),
                        "fold": k + 1,
                        "role": r.to_numpy(),
                    }
                )
                for k, r in enumerate(roles)
            ).sort_values(["fold", "participant_id"], ignore_index=True)
            check_no_leakage(assignments, subjects, fixed_test=bool(settings.test_fraction))
            return Splits(assignments, subjects, seed, attempts, strategy)
    best = max(attempts, key=lambda a: a["worst_p"])
    raise ConfigError(
        f"{where}.p_threshold",
        f"no split in {settings.max_attempts} attempts has age/sex p-values of at least "
        f"{settings.p_threshold} (best attempt {best['attempt']}: "
        f"smallest p = {best['worst_p']:.3f})",
        "lower p_threshold, raise max_attempts, or set age_column/sex_column to null",
    )


def _derived_seed(seed: int, attempt: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:attempt:{attempt}".encode()).digest()[:4], "big")


def validation_scheme(strategy: str, settings: SplitSettings) -> str:
    """How each fold's validation part is chosen, in words (recorded in splits.json)."""
    if settings.test_fraction:
        return (
            "fixed held-out test set; the k-fold parts of the rest take turns as the "
            "validation part (ClinicaDL's practice), so validation_fraction is not used"
        )
    if strategy == "grouped":
        return (
            f"whole {settings.group_by} groups of the training part, in seeded hash order, "
            f"until they hold at least {settings.validation_fraction:g} of it"
        )
    return f"{settings.validation_fraction:g} of each stratum of the training part"


def summary(splits: Splits, settings: SplitSettings, provenance: dict) -> dict:
    """Everything splits.json records: parameters, seeds, versions, counts and balance."""
    folds = []
    for k in sorted(splits.assignments.fold.unique()):
        fold = splits.fold(int(k))
        counts = {
            role: {
                str(s): int(n)
                for s, n in fold[fold.role == role].stratum.value_counts().sort_index().items()
            }
            for role in ROLES
        }
        folds.append(
            {
                "fold": int(k),
                "class_counts": counts,
                "sizes": {role: int((fold.role == role).sum()) for role in ROLES},
                "balance": splits.attempts[-1]["balance"][int(k) - 1],
            }
        )
    return {
        **provenance,
        "strategy": splits.strategy,
        "validation": validation_scheme(splits.strategy, settings),
        "parameters": asdict(settings),
        "seed_used": splits.seed_used,
        "attempts": [
            {key: a[key] for key in ("attempt", "seed", "worst_p", "passed")}
            for a in splits.attempts
        ],
        "n_subjects": int(len(splits.subjects)),
        "folds": folds,
        "versions": versions(),
    }


def versions() -> dict:
    from neuroadapt.provenance import package_versions

    return package_versions(("neuroadapt", "numpy", "pandas", "scipy", "scikit-learn"))


def write_splits(
    splits: Splits, settings: SplitSettings, provenance: dict, out_dir: str | Path
) -> None:
    """fold-<k>.tsv per fold, splits.json and balance.png, all appearing together."""
    from neuroadapt.report.balance import plot_split_balance

    with atomic_directory(out_dir) as staging:
        for k in sorted(splits.assignments.fold.unique()):
            splits.fold(int(k)).to_csv(
                staging / f"fold-{int(k)}.tsv", sep="\t", index=False, lineterminator="\n"
            )
        (staging / "splits.json").write_text(
            json.dumps(summary(splits, settings, provenance), indent=2, sort_keys=True) + "\n"
        )
        plot_split_balance(splits, settings, staging / "balance.png")


def read_fold(splits_dir: str | Path, k: int) -> pd.DataFrame:
    """participant_id, role, stratum of fold ``k`` (1-based)."""
    return pd.read_csv(Path(splits_dir) / f"fold-{k}.tsv", sep="\t", dtype=str)


def split_experiment(
    name: str, experiment: dict, table_path: str | Path, out_dir: str | Path
) -> Splits:
    """The splits rule: read subjects.tsv, draw the folds of experiment ``name``, write them."""
    from neuroadapt.spec import spec_from_mapping
    from neuroadapt.subjects import read_subjects_table

    where = f"experiments.{name}.splits"
    settings = spec_from_mapping(SplitSettings, experiment.get("splits"), where)
    target, task, survival = experiment["target"], experiment["task"], experiment.get("survival")
    rows = read_subjects_table(table_path)
    settings = balance_columns_present(settings, rows.columns, where, str(table_path))
    subjects = subject_table(rows, target, task, survival, settings, source=str(table_path))
    splits = make_splits(
        subjects, settings, task, class_labels(subjects, target, task, survival), where
    )
    provenance = {
        "experiment": name,
        "dataset": experiment["dataset"],
        "task": task,
        "target": target,
        "survival": survival,
        "subjects_table": str(table_path),
    }
    write_splits(splits, settings, provenance, out_dir)
    return splits
