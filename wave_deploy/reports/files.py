"""Reading and writing a device output directory's report files: report.json (strict JSON, validated through
reports.schema on every read and write), report.md and plots/*.png.

``write_report_files`` records what it wrote (and the device report a merged report rests on) with their
sha256 in manifest.json, so every report a wave-deploy command writes is one the directory can prove
(reports.verify checks it on every read).

Fail closed: ``write_failure_report`` replaces whatever report a directory held with a failing one, so a
run that fails never leaves an earlier run's PASS at a final path.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wave_deploy import strict_json
from wave_deploy.errors import InvalidInputError, WaveDeployError
from wave_deploy.fileio import sha256_file, write_json, write_text
from wave_deploy.pipeline.manifest import MANIFEST, outputs_of, read_manifest, record_outputs
from wave_deploy.reports.markdown import render_failure_markdown, render_markdown
from wave_deploy.reports.plots import PLOTS, write_plots
from wave_deploy.reports.schema import SCHEMA_VERSION, Failure, dump, parse_build_report
from wave_deploy.version import __version__

log = logging.getLogger(__name__)

REPORT_JSON, REPORT_MD, PLOTS_DIR = "report.json", "report.md", "plots"
REPORT_STAGE = "report"  # the manifest stage that records the report files
KEPT_DIR, KEPT_NAME = "device", "device_report.json"  # where a merged device report is kept in a build dir
KEPT_REL = f"{KEPT_DIR}/{KEPT_NAME}"


def validate_report(report: object, where: str) -> dict[str, Any]:
    """The report as a JSON-ready dict if it matches the BuildReport schema; else InvalidInputError."""
    return dump(parse_build_report(report, where))


def read_json(path: Path, what: str) -> object:
    """A JSON file the gate reads (``what`` names it in errors), strictly (``wave_deploy.strict_json``: no
    duplicate keys, no NaN/Infinity); InvalidInputError if missing, unreadable or not strict JSON."""
    return strict_json.read(path, what)


def load_report(out_dir: str | Path) -> dict[str, Any]:
    """report.json of one device output directory, validated."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InvalidInputError(f"{out_dir}: not a directory (expected a device output directory)")
    return validate_report(read_json(out_dir / REPORT_JSON, "report.json"), str(out_dir))


# What a build leaves at the top of every device output directory: a folder holding any of these is one
# (and must hold a valid report.json), whether or not its report.json is still there.
BUILD_OUTPUTS = (REPORT_JSON, REPORT_MD, MANIFEST, "model.onnx", "model.safetensors", "bundle", KEPT_DIR,
                 "stale")  # fmt: skip


def is_build_output(path: Path) -> bool:
    """Whether ``path`` is a folder holding anything a build writes at the top of a device output directory."""
    return path.is_dir() and any((path / name).exists() for name in BUILD_OUTPUTS)


def report_dirs(dirs: list[str | Path]) -> list[Path]:
    """Device output directories: each DIR, or, for a folder that is not one itself (``is_build_output``),
    each of its non-hidden subfolders that is one. Such a subfolder without its report.json is listed all the
    same, so that ``load_report`` refuses it (exit 3) as it does in the ``artifacts/*`` form: deleting a
    failing profile's report.json cannot drop that profile from the gate."""
    found: list[Path] = []
    for d in map(Path, dirs):
        if d.is_dir() and not is_build_output(d):
            children = sorted(c for c in d.iterdir() if not c.name.startswith(".") and is_build_output(c))
            if children:
                found.extend(children)
                continue
        found.append(d)  # load_report names it if it is not a device output directory
    return found


def write_report_files(out_dir: str | Path, report: dict[str, Any]) -> list[Path]:
    """Write plots/<name>.png (those the report has data for), report.md and report.json into out_dir, each
    atomically, report.json last; set report["artifacts"]["plots"] to match; record the written files (and the
    kept device report a merged report rests on) in manifest.json's "report" stage. Return the written paths.
    """
    out_dir = Path(out_dir)
    report = validate_report(report, str(out_dir))
    plots = write_plots(out_dir / PLOTS_DIR, report)
    _remove_stale_plots(out_dir, keep={name for name, path in plots.items() if path})
    arts = report.setdefault("artifacts", {})
    arts["plots"] = {name: (f"{PLOTS_DIR}/{name}.png" if path else None) for name, path in plots.items()}
    arts["report_md"] = REPORT_MD
    md = write_text(out_dir / REPORT_MD, render_markdown(report))
    written = [p for p in plots.values() if p] + [md, write_json(out_dir / REPORT_JSON, report)]
    outputs = {str(Path(p).relative_to(out_dir)): sha256_file(p) for p in written}
    device = (report.get("measured") or {}).get("device")
    if device is not None:
        outputs[device["source"]] = device["device_report_sha256"]
    record_outputs(out_dir, REPORT_STAGE, outputs)
    return written


def _remove_stale_plots(out_dir: Path, keep: set[str]) -> None:
    for name in PLOTS:
        if name not in keep:
            (out_dir / PLOTS_DIR / f"{name}.png").unlink(missing_ok=True)


def failure_of(stage: str, error: BaseException) -> Failure:
    """The report's ``failure`` section for an error raised by ``stage``."""
    if isinstance(error, WaveDeployError):
        return Failure(stage=stage, exit_code=error.exit_code, error=type(error).__name__,
                       message=error.one_line())  # fmt: skip
    return Failure(stage=stage, exit_code=1, error=type(error).__name__, message=" ".join(str(error).split()))


def write_failure_report(
    out_dir: str | Path,
    profile: dict[str, Any],
    failure: Failure,
    *,
    only_if_present: bool = False,
    moved_aside: str | None = None,
) -> Path | None:
    """Replace out_dir's report with a failing one (verdict fail, the failure, no stale sections or plots).

    ``profile`` is report.json's profile section. With ``only_if_present`` nothing is created where no
    report stood (an input error before any work): only an earlier report is neutralised. ``moved_aside``
    is where the earlier run's models went (``stale/<run>/``, relative to out_dir); the report says so.
    """
    out_dir = Path(out_dir)
    if only_if_present and not (out_dir / REPORT_JSON).exists():
        return None
    artifacts: dict[str, Any] = {"report_md": REPORT_MD, "plots": dict.fromkeys(PLOTS)}
    if moved_aside is not None:
        artifacts["moved_aside"] = moved_aside  # where the earlier run's models went
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "build_report",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wave_deploy": __version__,
        "profile": profile,
        "verdict": "fail",
        "failed_budgets": [],
        "failure": failure.model_dump(),
        "artifacts": artifacts,
    }
    report = validate_report(report, str(out_dir))
    _remove_stale_plots(out_dir, keep=set())
    md = write_text(out_dir / REPORT_MD, render_failure_markdown(report))
    written = write_json(out_dir / REPORT_JSON, report)
    _record_failure(out_dir, [md, written])
    return written


def _record_failure(out_dir: Path, written: list[Path]) -> None:
    """Record a failure report as the directory's report (where a manifest exists), with an empty stage key:
    restoring an earlier PASS report.json no longer matches manifest.json, and the next build redoes its
    report stage. A merged device measurement (``KEPT_REL``) stays recorded while the kept file still hashes
    to its recorded sha256, so the next build merges it again (a measured FAIL outlives a failed run); an
    edited one is not recorded anew. Best effort: the failure report itself is what must not fail."""
    if not (out_dir / MANIFEST).is_file():
        return
    try:
        outputs = {p.name: sha256_file(p) for p in written}
        manifest = read_manifest(out_dir) or {"stages": []}
        merged = outputs_of({s["name"]: s for s in manifest["stages"]}).get(KEPT_REL)
        kept = out_dir / KEPT_REL
        if merged is not None and kept.is_file() and sha256_file(kept) == merged:
            outputs[KEPT_REL] = merged
        record_outputs(out_dir, REPORT_STAGE, outputs, key="")
    except (InvalidInputError, OSError) as exc:  # e.g. the unreadable manifest that failed the build
        log.warning("%s: could not record the failure report in %s: %s", out_dir, MANIFEST, exc)
