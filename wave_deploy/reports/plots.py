"""PNG plots of a build report: the candidate frontier, the latency histogram and the training curves.

Every plot is deterministic: a fixed figure size and dpi, matplotlib's built-in default style (the user's
matplotlibrc does not leak in) and no Software/date metadata in the PNG, so the same report renders
byte-identical files with the same matplotlib and FreeType. matplotlib is imported inside the functions
(Agg canvas, no pyplot, no global backend switch). ``*_png(report)`` return the PNG bytes, or None when
the report lacks the data; ``plot_*(report, path)`` write the file atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import write_bytes

FIGSIZE_IN = (7.0, 4.2)
DPI = 110
PNG_METADATA = {"Software": None}  # matplotlib writes its version here by default; PNGs get no date

CHOSEN_COLOR, FEASIBLE_COLOR, REJECTED_COLOR, BUDGET_COLOR = "tab:red", "tab:blue", "0.75", "tab:red"


# --- PNG plots --------------------------------------------------------------------------------------------


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(draw, report: dict) -> bytes | None:
    import matplotlib.style

    with matplotlib.style.context("default"):
        fig = _figure()
        if draw(fig, report) is False:
            return None
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA)
    return buf.getvalue()


def _draw_frontier(fig, report: dict) -> bool:
    sel = report.get("selection") or {}
    frontier = sel.get("frontier") or []
    if not frontier:
        return False
    budget = (report.get("budgets") or {}).get("latency") or {}
    pred = report.get("prediction") or {}
    ax = fig.add_subplot(1, 1, 1)
    ordered = sorted(frontier, key=lambda c: c["latency_ms"])
    by_acc = sel.get("objective") == "accuracy" and all(c.get("accuracy") is not None for c in frontier)

    def y_of(c: dict) -> float:  # the objective's axis: sliced accuracy (%) or GFLOPs
        return 100 * c["accuracy"] if by_acc else c["flops"] / 1e9

    # frontier line over all points, then feasible (colour) and rejected (grey) markers on top
    ax.plot([c["latency_ms"] for c in ordered], [y_of(c) for c in ordered], color="0.6", lw=0.8)
    for feasible, color, label in (
        (True, FEASIBLE_COLOR, "fits the budgets"),
        (False, REJECTED_COLOR, "rejected"),
    ):
        pts = [c for c in ordered if bool(c.get("feasible")) is feasible]
        if pts:
            edge = "none" if feasible else "0.35"
            x, y = [c["latency_ms"] for c in pts], [y_of(c) for c in pts]
            ax.scatter(x, y, s=22, c=color, edgecolors=edge, linewidths=0.5, label=label, zorder=3)
    chosen = sel.get("chosen")
    if chosen and (not by_acc or chosen.get("accuracy") is not None):
        label = f"chosen: {report.get('spec_name', '')}"
        ax.scatter([chosen["latency_ms"]], [y_of(chosen)], s=160, marker="*", c=CHOSEN_COLOR,
                   zorder=4, label=label)  # fmt: skip
        device = ((report.get("measured") or {}).get("device") or {}).get("latency")
        pct = budget.get("percentile") or pred.get("percentile")
        if device and pct and f"{pct}_ms" in device:
            ax.scatter([device[f"{pct}_ms"]], [y_of(chosen)], s=70, marker="D", facecolors="none",
                       edgecolors=CHOSEN_COLOR, zorder=4, label="chosen, measured on device")  # fmt: skip
    if budget.get("budget_ms"):
        ax.axvline(budget["budget_ms"], ls="--", lw=1.2, color=BUDGET_COLOR,
                   label=f"budget {budget['budget_ms']:g} ms ({budget.get('percentile', '')})")  # fmt: skip
    ax.set_xlabel(f"predicted latency {pred.get('percentile', '')} at batch {pred.get('batch', '?')} (ms)")
    ax.set_ylabel("sliced accuracy (%)" if by_acc else "GFLOPs per image")
    profile = (report.get("profile") or {}).get("name", "")
    ax.set_title(f"{profile}: candidate frontier (latency: {pred.get('source', '?')})", fontsize=9)
    ax.grid(True, lw=0.3, alpha=0.6)
    ax.legend(fontsize=7, loc="lower right")
    return True


def _draw_latency(fig, report: dict) -> bool:
    samples = [float(s) for s in report.get("latency_samples_ms") or []]
    if not samples:
        return False
    local = (report.get("measured") or {}).get("local") or {}
    ax = fig.add_subplot(1, 1, 1)
    bins = min(50, max(10, len(samples) // 5))
    ax.hist(samples, bins=bins, color=FEASIBLE_COLOR, alpha=0.8)
    for key, style in (("p50_ms", "-"), ("p99_ms", "--")):
        if local.get(key) is not None:
            ax.axvline(local[key], color="black", ls=style, lw=1.2, label=f"{key[:3]} {local[key]:.3f} ms")
    ax.set_xlabel(f"latency per call at batch {local.get('batch', '?')} (ms, {local.get('timed', '?')})")
    ax.set_ylabel("iterations")
    hardware = local.get("hardware", "unknown hardware")
    ax.set_title(f"measured on the build machine, not the target: {hardware}", fontsize=8)
    ax.grid(True, lw=0.3, alpha=0.6)
    if local:
        ax.legend(fontsize=8)
    return True


def _phase_points(phase: dict | None, offset: int, key: str) -> tuple[list[int], list[float]]:
    curve = (phase or {}).get("curve") or []
    pts = [(offset + int(p["step"]), float(p[key])) for p in curve if p.get(key) is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def _draw_training(fig, report: dict) -> bool:
    """Two panels: validation accuracy over both phases, starting from the accuracy at initialization;
    and each phase's training loss on its own axis (the scaler phase minimizes a distillation loss, the
    dense phase cross-entropy: two different quantities, never drawn on one scale)."""
    training = report.get("training") or {}
    scaler, dense = training.get("scaler_phase"), training.get("dense_phase")
    if not any((p or {}).get("curve") for p in (scaler, dense)):
        return False
    # steps count within a phase; the dense phase is drawn after the scaler phase
    offset = int((scaler or {}).get("steps") or 0)
    ax_acc, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    phases = ((scaler, 0, "scaler phase", "tab:purple"), (dense, offset, "dense phase", "tab:green"))
    at_init = (report.get("accuracy") or {}).get("val_acc_at_init")
    if at_init is not None:
        ax_acc.scatter([0], [100 * at_init], marker="s", s=28, color="black", zorder=3, label="at init")
    for phase, off, name, color in phases:
        x, y = _phase_points(phase, off, "val_acc")
        if x:
            ax_acc.plot(x, [100 * v for v in y], color=color, lw=1.4, marker="o", ms=3, label=name)
    ax_acc.set_xlabel("step (scaler, then dense)")
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_acc.legend(fontsize=7, loc="lower right")
    ax_twin = ax_loss.twinx() if scaler and dense else None
    for (phase, off, name, color), ax in zip(phases, (ax_loss, ax_twin or ax_loss)):
        x, y = _phase_points(phase, off, "train_loss")
        if x:
            what = "distillation loss" if phase is scaler else "cross-entropy"
            ax.plot(x, y, color=color, lw=1.0)
            ax.set_ylabel(f"{name}: {what}", color=color, fontsize=8)
    if scaler and dense and offset:
        for ax in (ax_acc, ax_loss):
            ax.axvline(offset, color="0.5", ls=":", lw=1)
    ax_loss.set_xlabel("step (scaler, then dense)")
    for ax in (ax_acc, ax_loss):
        ax.grid(True, lw=0.3, alpha=0.6)
    acc = (report.get("accuracy") or {}).get("dataset", "")
    ax_acc.set_title(f"validation accuracy ({acc})" if acc else "validation accuracy", fontsize=8)
    ax_loss.set_title("training loss, each phase on its own axis", fontsize=8)
    return True


def frontier_png(report: dict) -> bytes | None:
    return _png(_draw_frontier, report)


def latency_png(report: dict) -> bytes | None:
    return _png(_draw_latency, report)


def training_png(report: dict) -> bytes | None:
    return _png(_draw_training, report)


PLOTS = {"frontier": frontier_png, "latency": latency_png, "training": training_png}
PLOT_DATA = {"frontier": "selection.frontier", "latency": "latency_samples_ms", "training": "training curves"}


def _write(name: str, report: dict, path: str | Path) -> Path:
    data = PLOTS[name](report)
    if data is None:
        raise InvalidInputError(f"cannot draw the {name} plot: the report has no {PLOT_DATA[name]}")
    return write_bytes(path, data)


def plot_frontier(report: dict, path: str | Path) -> Path:
    """FLOPs vs predicted latency of the frontier, budget line, chosen spec starred, rejected ones grey."""
    return _write("frontier", report, path)


def plot_latency(report: dict, path: str | Path) -> Path:
    """Histogram of the build machine's per-call latencies with its p50 and p99."""
    return _write("latency", report, path)


def plot_training(report: dict, path: str | Path) -> Path:
    """Train loss and val accuracy vs step over the scaler and dense phases."""
    return _write("training", report, path)


def write_plots(plots_dir: str | Path, report: dict) -> dict[str, Path | None]:
    """Every plot the report has data for, as plots_dir/<name>.png; None for the ones it lacks data for."""
    out: dict[str, Path | None] = {}
    for name, render in PLOTS.items():
        data = render(report)
        out[name] = None if data is None else write_bytes(Path(plots_dir) / f"{name}.png", data)
    return out
