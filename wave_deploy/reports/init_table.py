"""How a report shows a build's initialization: one line, or ``build --compare-init``'s table (report.json's
``init_comparison`` section, schema ``reports.schema.InitComparison``), in report.md and the HTML index."""

from __future__ import annotations

import html

HEADER = ("init", "val accuracy (mean ± std)", "per seed", "seeds", "training TFLOP", "steps", "wall s / run",
          "at init", "")  # fmt: skip


def rows(comparison: dict) -> list[list[str]]:
    """The table's cells: one row per initialization, the deployed one marked."""
    out = []
    for r in comparison["rows"]:
        if r["status"] == "skipped":
            out.append([r["init"], "skipped", r.get("reason") or "", "", "", "", "", "", ""])
            continue
        steps = (
            f"{r['scaler_steps']} scaler + {r['dense_steps']} dense"
            if r["scaler_steps"]
            else f"{r['dense_steps']} dense"
        )
        out.append([
            r["init"],
            f"{100 * r['val_acc_mean']:.2f} ± {100 * r['val_acc_std']:.2f} %",
            ", ".join(f"{100 * a:.1f}" for a in r["val_accs"]),
            ", ".join(str(s) for s in r["seeds"]),
            f"{r['training_flops'] / 1e12:.4g}",
            steps,
            f"{r['wall_s_mean']:.1f}",
            f"{100 * r['val_acc_at_init_mean']:.1f} %",
            "**deployed**" if r["init"] == comparison["chosen"] else "",
        ])  # fmt: skip
    return out


def summary(comparison: dict) -> str:
    """One sentence: what was compared, at what budget, and what was deployed."""
    seeds = len(comparison["seeds"])
    return (
        f"Every usable initialization was trained for the same {comparison['budget_flops'] / 1e12:.4g} TFLOP "
        f"(the build's {comparison['schedule_steps']} steps at batch {comparison['batch_size']} as dense steps; "
        f"a distilled scaler step also pays its teacher's forward), {seeds} seed{'s' if seeds != 1 else ''} "
        f"each, on this build's validation split; deployed: **{comparison['chosen']}** ({comparison['rule']}). "
        f"Estimated {comparison['estimate_s']:.0f} s before training, took {comparison['wall_s']:.0f} s."
    )


def markdown(report: dict) -> list[str]:
    """report.md's "Initialization" section."""
    comparison = report.get("init_comparison")
    init = (report.get("training") or {}).get("init") or "wave"
    out = ["## Initialization", ""]
    if not comparison:
        return out + [
            f"Initialized by **{init}** (`build --init`; `--compare-init` measures the choice).",
            "",
        ]
    out += [summary(comparison), ""]
    out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(comparison)]
    return out + [""]


def html_lines(report: dict) -> list[str]:
    """The HTML index's lines for one device: the comparison's table (nothing without one)."""
    comparison = report.get("init_comparison")
    if not comparison:
        return []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    out = [f'<p class="muted">{html.escape(summary(comparison).replace("**", ""))}</p>',
           f'<div class="scroll"><table><tr>{head}</tr>']  # fmt: skip
    for row in rows(comparison):
        cells = "".join(f"<td>{html.escape(c.replace('**', ''))}</td>" for c in row)
        out.append(f"<tr>{cells}</tr>")
    return out + ["</table></div>"]
