"""Learning-curve plots for the paper READMEs: one colour per method, its seeds as line styles or a band.

    plot_curves({"PPO+Q-RM": [run_seed0, run_seed1], ...}, "results/toy/curves.png", title, "updates",
                "Pass@1 (points)", reference={"SFT": 41.4}, band=True)

A run is a list of (x, y) points; a method maps to one run or to a list of runs (one per seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.tables import precision

Run = Sequence[tuple[float, float]]
_SEED_STYLES = ("-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _runs(curves: Run | Sequence[Run]) -> list[list[tuple[float, float]]]:
    """One run (a list of (x, y)) or several (one per seed) -> a list of runs; JSON lists work too."""
    curves = list(curves)
    first = next((c for c in curves if len(c)), None)
    if first is not None and isinstance(first[0], Sequence):  # its items are runs, not points
        return [[tuple(point) for point in run] for run in curves]
    return [[tuple(point) for point in curves]]


def curves_figure(
    series: dict[str, Run | Sequence[Run]],
    title: str,
    xlabel: str,
    ylabel: str,
    reference: dict[str, float] | None = None,
    band: bool = False,
):
    """A matplotlib Figure: one colour per method, its seeds as line styles (or, with `band`, the mean
    over seeds at each x with a min-max band), each `reference` level as a dashed grey line, and the
    legend outside the axes naming every method, every seed style and every reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    palette = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=120)
    handles, seeds = [], 0
    for i, (name, curves) in enumerate(series.items()):
        colour, runs = palette[i % len(palette)], _runs(curves)
        seeds = max(seeds, len(runs))
        marker = "o" if max(len(r) for r in runs) < 30 else None
        if band and len(runs) > 1:
            by_x: dict[float, list[float]] = {}
            for run in runs:
                for x, y in run:
                    by_x.setdefault(x, []).append(y)
            xs = sorted(by_x)
            ax.fill_between(
                xs, [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs], color=colour, alpha=0.2
            )
            ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], color=colour, marker=marker)
        else:
            for j, run in enumerate(runs):
                xs, ys = zip(*run) if run else ((), ())
                ax.plot(xs, ys, color=colour, linestyle=_SEED_STYLES[j % len(_SEED_STYLES)], marker=marker)
        handles.append(Line2D([], [], color=colour, marker=marker, label=name))
    if seeds > 1 and not band:
        handles += [
            Line2D([], [], color="0.4", linestyle=_SEED_STYLES[j % len(_SEED_STYLES)], label=f"seed #{j + 1}")
            for j in range(seeds)
        ]
    elif band and seeds > 1:
        handles.append(matplotlib.patches.Patch(color="0.6", alpha=0.4, label=f"min-max over {seeds} seeds"))
    greys = ("0.25", "0.5", "0.7")
    for k, (name, level) in enumerate((reference or {}).items()):
        ax.axhline(level, color=greys[k % len(greys)], linestyle="--", linewidth=1.2)
        handles.append(
            Line2D(
                [],
                [],
                color=greys[k % len(greys)],
                linestyle="--",
                label=f"{name} ({level:.{precision(level)}f})",
            )
        )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(
    series: dict[str, Run | Sequence[Run]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    reference: dict[str, float] | None = None,
    band: bool = False,
) -> Path:
    """Save `curves_figure(...)` as a PNG at `path` (the legend outside the axes is kept in the image).

    `series` maps a method to one run `[(x, y), ...]` or to a list of runs (one per seed);
    `reference={"SFT": 41.6}` draws the starting level as a dashed line."""
    import matplotlib.pyplot as plt

    fig = curves_figure(series, title, xlabel, ylabel, reference, band)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
