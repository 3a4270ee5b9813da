"""No PASS after any failure: what a failed build leaves at the final paths of the profiles it was asked for.

- ``move_aside(out_dir, completed)``: after a failed build of one profile, the models, ONNX variants, bundle/
  and engine/ of the stages this run did not complete (so: of an earlier run) move to
  ``<profile dir>/stale/<UTC time>-<random>/``. A CI job that uploads the directory with ``if: always()``
  then cannot ship an earlier bundle beside the failing report; the report says where they went.
- ``neutralize(out, profiles, failure)``: for an error before any per-profile work (click's usage errors, a
  bad option or ``--set``, a bad bank or data): every requested profile whose directory exists gets a failing
  report (where it had one) and its earlier models moved aside. Best effort: a profile whose name cannot be
  resolved has no directory this run could name, and a problem while neutralising is logged, never raised
  over the error that caused it. A multi-profile build stopped by an error that is not a build failure
  (an interrupt, a bug) neutralises the profiles it did not reach the same way.

Light imports only: ``wave-deploy build``'s usage errors come here before anything heavy is loaded.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from wave_deploy.errors import WaveDeployError
from wave_deploy.profiles import load_profile
from wave_deploy.reports.assemble import profile_section
from wave_deploy.reports.files import write_failure_report
from wave_deploy.reports.schema import Failure

if TYPE_CHECKING:
    from wave_deploy.profiles import DeviceProfile

log = logging.getLogger(__name__)

STALE_DIR = "stale"
# What a stage leaves that a person or a CI job could deploy, by the stage that writes it.
DEPLOYABLES: dict[str, tuple[str, ...]] = {
    "train": ("model.safetensors",),
    "export": ("model.onnx", "model.*.onnx", "bundle", "engine"),
}


def run_id() -> str:
    """A name for one run's stale folder: sortable UTC time plus a random suffix (two runs in one second)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def move_aside(out_dir: str | Path, completed: Iterable[str] = ()) -> str | None:
    """Move the deployable files of the stages not in ``completed`` into ``stale/<run id>/`` under out_dir.

    Returns that folder relative to out_dir (``"stale/<run id>/"``), or None when there was nothing to move.
    """
    out_dir, done = Path(out_dir), set(completed)
    found = [
        path
        for stage, patterns in DEPLOYABLES.items()
        if stage not in done
        for pattern in patterns
        for path in sorted(out_dir.glob(pattern))
    ]
    if not found:
        return None
    rel = f"{STALE_DIR}/{run_id()}"
    target = out_dir / rel
    target.mkdir(parents=True)
    for path in found:
        os.replace(path, target / path.name)
    log.warning("%s: moved the earlier run's %s to %s/", out_dir, ", ".join(p.name for p in found), rel)
    return rel + "/"


def fail_closed(out_dir: str | Path, profile_section: dict, failure: Failure, completed: Iterable[str],
                *, only_if_present: bool) -> None:  # fmt: skip
    """The failing report of one profile's directory, after moving the earlier run's models aside."""

    moved = move_aside(out_dir, completed) if Path(out_dir).is_dir() else None
    write_failure_report(
        out_dir, profile_section, failure, only_if_present=only_if_present, moved_aside=moved
    )


def neutralize(out: str | Path, profiles: Iterable[str], failure: Failure) -> None:
    """Fail closed for an error before any per-profile work: see the module docstring."""

    loaded = []
    for name in dict.fromkeys(profiles):
        try:
            loaded.append(load_profile(name))
        except (WaveDeployError, OSError, ValueError):
            continue  # nothing at a final path can be named for it
    neutralize_profiles(out, loaded, failure)


def neutralize_profiles(out: str | Path, profiles: Iterable[DeviceProfile], failure: Failure) -> None:
    """``neutralize`` for profiles already loaded (those a stopped multi-profile build did not reach)."""

    for profile in profiles:
        out_dir = Path(out) / profile.name
        if not out_dir.is_dir():
            continue
        try:
            fail_closed(out_dir, profile_section(profile), failure, (), only_if_present=True)
        except (WaveDeployError, OSError) as exc:
            log.warning("%s: could not mark the earlier report failed: %s", out_dir, exc)
