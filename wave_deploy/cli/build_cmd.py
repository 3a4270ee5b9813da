"""``wave-deploy build``: the whole pipeline for one or more device profiles.

The options are ``wave_deploy.options.BuildOptions`` (the same model as ``wave_deploy.build``'s keyword
arguments); this module adds what only a command line has: the profiles to build, the exit policy for broken
budgets, ``--dry-run`` and the printed summary.

No PASS after any failure: an error before the pipeline starts (click's own usage errors included, which
happen before the command body runs) marks failed the reports of the profiles the command asked for and moves
their earlier models aside (``pipeline.failclosed.neutralize``); errors inside the pipeline are handled there.
A dry run writes nothing, failed or not: its errors (click's included) leave every directory as it was.
"""

from __future__ import annotations

import time

import click

from wave_deploy.cli.options import json_option, model_options
from wave_deploy.cli.output import console, is_quiet, print_json, table
from wave_deploy.cli.progress import TrainingProgress
from wave_deploy.errors import UsageError
from wave_deploy.fileio import check_writable_dir
from wave_deploy.options import BuildOptions, parse
from wave_deploy.pipeline.failclosed import neutralize
from wave_deploy.pipeline.results import outcome
from wave_deploy.profiles import list_profiles
from wave_deploy.reports.files import failure_of
from wave_deploy.reports.schema import Failure
from wave_deploy.reports.verify import manifest_sha256


def requested_in_argv(args: list[str]) -> tuple[list[str], str]:
    """The profiles (``--profile``, ``--all-profiles``) and output root (``--out``) a build's raw arguments
    ask for, read best-effort (for arguments click refused, so nothing here may fail)."""
    profiles: list[str] = []
    out, all_profiles = str(BuildOptions.model_fields["out"].default), False
    i = 0
    while i < len(args) and args[i] != "--":
        arg = args[i]
        flag, eq, value = arg.partition("=")
        if flag in ("--profile", "--out") and not eq and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        if flag == "--profile" and (eq or value):
            profiles.append(value)
        elif flag == "--out" and (eq or value):
            out = value
        all_profiles = all_profiles or arg == "--all-profiles"
        i += 1
    return (profiles + _all_names()) if all_profiles else profiles, out


def dry_run_in_argv(args: list[str]) -> bool:
    """Whether a build's raw arguments ask for ``--dry-run`` (before ``--``), read as ``requested_in_argv``
    reads them: a dry run writes nothing, not even when click refuses its other arguments."""
    head = args[: args.index("--")] if "--" in args else args
    return "--dry-run" in head


def _all_names() -> list[str]:

    try:
        return [p.name for p in list_profiles()]
    except Exception:  # noqa: BLE001  (best effort: an unreadable shipped profile names nothing)
        return []


def _neutralize(profiles: list[str], out: str | None, exc: BaseException) -> None:
    """Fail closed before the pipeline started: the requested profiles' earlier reports say FAIL."""

    if isinstance(exc, click.ClickException):
        message = " ".join(exc.format_message().split())
        failure = Failure(stage="inputs", exit_code=exc.exit_code, error="UsageError", message=message)
    elif isinstance(exc, click.exceptions.Exit) and exc.exit_code == 0:
        return
    else:
        failure = failure_of("inputs", exc)
    neutralize(out or str(BuildOptions.model_fields["out"].default), profiles, failure)


class BuildCommand(click.Command):
    """``build`` whose usage errors fail closed: click refuses a bad value, an unknown option or a missing
    option value while making the context, before the command body runs; the profiles and ``--out`` are then
    read from the raw arguments, their earlier reports marked failed (not for ``--dry-run``), and the error
    raised again."""

    def make_context(self, info_name, args, parent=None, **extra):
        raw = list(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            self.on_refused(raw, exc)
            raise

    def on_refused(self, args: list[str], exc: click.ClickException) -> None:
        """Click refused ``args``, this command's raw arguments, here or in the group before ``build``
        (``wave-deploy --bogus build ...``, cli.main): fail closed, unless they ask for a dry run."""
        if not dry_run_in_argv(args):
            _neutralize(*requested_in_argv(args), exc)


@click.command("build", cls=BuildCommand)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    help="Device profile name, alias or YAML path; repeat for several devices.",
)
@click.option("--all-profiles", is_flag=True, help="Build every shipped profile.")
@model_options(BuildOptions)
@click.option(
    "--fail-on-budget/--no-fail-on-budget",
    default=True,
    show_default=True,
    help="Exit 8 when a built model breaks a budget (reports are written either way). "
    "--no-fail-on-budget never forgives --require-evidence: that still exits 9.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the resolved build (profiles, output directories, bank, data, every option's value) as one "
    "JSON object and exit; nothing is trained or written.",
)
@json_option("Print one JSON summary on stdout (progress lines still go to stderr).")
def build(profiles, all_profiles, fail_on_budget, dry_run, as_json, **fields) -> None:
    """Pick, initialize, train, fold, export and benchmark the ViT that fits each device; write reports.

    Re-running the same command reuses every finished stage; a killed build resumes where it stopped.
    Exit 8 (after writing the reports) when a built model breaks a budget, 9 when a budget within its
    limit was judged on weaker evidence than --require-evidence (or the profile) asks, 5 when no size fits.

    Every profile is built even when another fails; the exit code is then the most severe of theirs
    (1, 6, 7, 4, 3, 5, 8, 9). A failed profile's report.json/report.md say FAIL and why: no earlier PASS is
    left standing. With --json, one object on stdout on every exit, with one entry per profile.
    """

    requested = list(profiles) + (_all_names() if all_profiles else [])
    try:
        if all_profiles and profiles:
            raise UsageError("give --profile or --all-profiles, not both")
        profiles = tuple(requested)
        if not profiles:
            raise UsageError("give at least one --profile (e.g. --profile jetson) or --all-profiles")
        options = parse(BuildOptions, fields, "build")
    except BaseException as exc:
        if not dry_run:  # a dry run writes nothing, failed or not
            _neutralize(requested, fields.get("out"), exc)
        raise
    if dry_run:  # (imports torch: a bank or teacher is loaded as the build loads it)
        from wave_deploy.pipeline.resolve import resolve_build

        print_json({**resolve_build(list(profiles), options), "fail_on_budget": fail_on_budget})
        return
    _run(list(profiles), options, fail_on_budget, as_json)


def _run(profiles: list[str], options: BuildOptions, fail_on_budget: bool, as_json: bool) -> None:

    from wave_deploy.pipeline.build import build as run_build

    check_writable_dir(
        options.out, "--out"
    )  # before any stage: a path that cannot be written fails now, exit 3
    quiet = is_quiet()  # --json keeps the progress lines: they go to stderr, the summary to stdout
    err = console(stderr=True)
    t0 = time.perf_counter()

    def on_event(profile: str, stage: str, status: str, seconds: float | None) -> None:
        if quiet or status == "start":
            return
        what = "reused (inputs unchanged)" if status == "reused" else f"done in {seconds:.1f} s"
        err.print(f"[{profile}] {stage:<7} {what}", markup=False)

    def on_note(profile: str, message: str) -> None:
        if not quiet:
            err.print(f"[{profile}] {message}", markup=False)

    with TrainingProgress("training", console=err, disable=quiet) as bar:
        results = run_build(profiles, options, on_event=on_event, on_step=bar, on_note=on_note)
    summary = [_summary_row(r) for r in results]
    error = outcome(results, fail_on_budget)
    if as_json:
        failure = None if error is None else {"class": type(error).__name__, "message": error.one_line()}
        print_json(
            {
                "ok": error is None,
                "exit_code": 0 if error is None else error.exit_code,
                "error": failure,
                "devices": summary,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    elif not quiet and not (len(results) == 1 and results[0].error is not None):
        # (one profile that failed: its one-line error below says everything the table would)
        columns = [
            "device",
            "spec",
            "params",
            "predicted",
            "budget",
            "judged on",
            "local p50",
            "val acc",
            "verdict",
        ]
        err.print(table(None, columns, [_table_row(s) for s in summary]))
        reports = ", ".join(s["report"] for s in summary)
        err.print(f"reports: {reports}  ({time.perf_counter() - t0:.0f} s)", markup=False)
    if error is not None:
        raise error


def _table_row(s: dict) -> list[str]:
    if s.get("error"):
        e = s["error"]
        return [
            s["profile"],
            "—",
            "",
            "",
            "",
            "",
            "",
            "",
            f"FAIL: exit {s['exit_code']} at {e['stage']}: {e['message']}",
        ]
    return [
        s["profile"],
        s["spec"],
        f"{s['params'] / 1e6:.2f}M",
        f"{s['predicted_latency_ms']:.2f} ms ({s['latency_source']})",
        f"{s['latency_budget_ms']:g} ms {s['percentile']}",
        ", ".join(f"{k} {v}" for k, v in s["evidence"].items() if k in ("latency", "memory")),
        "—" if s["local_p50_ms"] is None else f"{s['local_p50_ms']:.2f} ms",
        f"{s['val_acc']:.1%}",
        s["verdict"],
    ]


def _summary_row(result) -> dict:
    """One profile's entry of the build summary (--json "devices"); a failed build has "error"."""

    r = result.report
    row = {
        "profile": result.profile,
        "out_dir": result.out_dir,
        "report": f"{result.out_dir}/report.md",
        "exit_code": result.exit_code,
        "verdict": r["verdict"],
        "failed_budgets": r["failed_budgets"],
        "stages": result.stages,
        "error": None,
        # pin it outside a cached artifacts directory: `wave-deploy report DIR --expect-manifest SHA`
        "manifest_sha256": manifest_sha256(result.out_dir),
    }
    failure = r.get("failure")
    if failure is not None:
        row["error"] = {"stage": failure["stage"], "class": failure["error"], "message": failure["message"]}
    if r.get("spec") is None:  # failed before a model was chosen
        return row
    local = ((r["measured"] or {}).get("local") or {}).get("latency") or {}
    return {
        **row,
        "spec": r["spec_name"],
        "params": r["costs"]["params"],
        "predicted_latency_ms": r["prediction"]["latency_ms"],
        "latency_source": r["prediction"]["source"],
        "latency_budget_ms": r["budgets"]["latency"]["budget_ms"],
        "percentile": r["budgets"]["latency"]["percentile"],
        "predicted_memory_mib": r["prediction"]["memory_mib"],
        "local_p50_ms": local.get("p50_ms"),
        "val_acc": r["accuracy"]["val_acc"],
        # what each budget was judged on (device > calibrated > extrapolated > analytic; host; validation)
        "evidence": {name: check.get("evidence") for name, check in r["budgets"].items() if check},
        "required_evidence": r["budgets"]["latency"].get("required_evidence"),
        "init": (r.get("training") or {}).get("init"),
    }
