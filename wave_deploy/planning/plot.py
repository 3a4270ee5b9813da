"""The plan's frontier plot: the objective (FLOPs, or sliced accuracy with ``--objective accuracy``) vs predicted
latency of every candidate size, as a PNG.

Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so it changes no global
matplotlib state (backend, current figure) of the process that calls it.
"""

from __future__ import annotations

from pathlib import Path

from wave_deploy.fileio import atomic_path


def plot_frontier(selection, profile, path: str | Path) -> Path:
    """Write the frontier plot of ``selection`` (a selection.Selection) for ``profile`` to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_acc = selection.objective == "accuracy"

    def y_of(c) -> float:
        if by_acc:
            return 100 * c.accuracy if c.accuracy is not None else float("nan")
        return c.flops / 1e9

    for feasible, color, label in ((True, "tab:blue", "fits"), (False, "tab:gray", "rejected")):
        pts = [c for c in selection.candidates if c.feasible is feasible]
        ax.scatter([c.latency_at_budget_ms for c in pts], [y_of(c) for c in pts], s=12, c=color, label=label)
    front = selection.frontier
    ax.plot(
        [c.latency_at_budget_ms for c in front],
        [y_of(c) for c in front],
        c="tab:orange",
        lw=1,
        label="frontier",
    )
    chosen = selection.chosen
    ax.scatter(
        [chosen.latency_at_budget_ms],
        [y_of(chosen)],
        s=80,
        marker="*",
        c="tab:red",
        label=chosen.spec.name,
    )
    budgets = profile.budgets
    ax.axvline(budgets.latency_ms, ls="--", c="tab:red", lw=1)
    ax.set_xlabel(f"predicted latency {budgets.latency_percentile} (ms, batch {budgets.latency_batch})")
    ax.set_ylabel("sliced accuracy (%)" if by_acc else "GFLOPs per image")
    ax.set_title(f"{profile.name}: {selection.latency_source}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)
