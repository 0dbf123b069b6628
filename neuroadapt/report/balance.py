"""Figure of class and demographic balance per fold and role (for the report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from neuroadapt.report.style import CLASS_COLOURS, ROLE_COLOURS, plt, save_figure


def plot_split_balance(splits, settings, path: str | Path) -> None:
    """Three panels: subjects per class (stacked) per fold and role; age per fold and role;
    share of the first sex level per fold and role."""
    table = splits.assignments.merge(splits.subjects, on="participant_id")
    folds = sorted(table.fold.unique())
    roles = [r for r in ("train", "validation", "test") if (table.role == r).any()]
    panels = 1 + bool(settings.age_column) + bool(settings.sex_column)
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = axes[0]
    positions = {
        (k, r): i * (len(roles) + 1) + j for i, k in enumerate(folds) for j, r in enumerate(roles)
    }
    ticks = [np.mean([positions[(k, r)] for r in roles]) for k in folds]

    strata = sorted(table.stratum.unique())
    bottom = pd.Series(0.0, index=list(positions))
    for index, stratum in enumerate(strata):
        colour = CLASS_COLOURS[index % len(CLASS_COLOURS)]
        counts = table[table.stratum == stratum].groupby(["fold", "role"]).size()
        heights = pd.Series([counts.get(key, 0) for key in positions], index=list(positions))
        axes[0].bar(
            [positions[key] for key in positions],
            heights,
            bottom=bottom,
            color=colour,
            label=str(stratum),
            edgecolor="white",
            linewidth=0.5,
        )
        bottom += heights
    axes[0].set(
        title="Subjects per class",
        ylabel="subjects",
        xlabel="fold (bars: " + ", ".join(roles) + ")",
    )
    axes[0].legend(title="class / stratum", fontsize=7, title_fontsize=7, frameon=False)

    panel = 1
    if settings.age_column:
        ax = axes[panel]
        for (k, role), position in positions.items():
            ages = pd.to_numeric(
                table[(table.fold == k) & (table.role == role)][settings.age_column],
                errors="coerce",
            ).dropna()
            if len(ages):
                box = ax.boxplot([ages], positions=[position], widths=0.8, patch_artist=True)
                box["boxes"][0].set_facecolor(ROLE_COLOURS[role])
                for median in box["medians"]:
                    median.set_color("black")
        ax.set(title="Age", ylabel="age (years)", xlabel="fold")
        panel += 1
    if settings.sex_column:
        ax = axes[panel]
        level = sorted(table[settings.sex_column].dropna().astype(str).unique())[0]
        for (k, role), position in positions.items():
            part = table[(table.fold == k) & (table.role == role)][settings.sex_column].astype(str)
            ax.bar(position, (part == level).mean() if len(part) else 0, color=ROLE_COLOURS[role])
        ax.set(title=f"Sex: share of '{level}'", ylabel="fraction", xlabel="fold", ylim=(0, 1))
    for ax in axes:
        ax.set_xticks(ticks, [str(k) for k in folds])
    handles = [plt.Rectangle((0, 0), 1, 1, color=ROLE_COLOURS[r]) for r in roles]
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.legend(
        handles,
        roles,
        loc="upper center",
        ncol=len(roles),
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
        title="role (bar order within each fold)",
    )
    save_figure(figure, path)
