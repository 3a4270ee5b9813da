"""Resumable, cached pipeline stages recorded in ``manifest.json``.

A stage is a function that writes files into an output directory. Its *key* is a hash over everything that
determines its result: the hashes of its input files, its resolved configuration, and the package version.
``StageRunner.run`` reuses a stage when the manifest holds the same key and every recorded output still exists
with the recorded sha256; otherwise it runs the stage, hashes its outputs and records them. Every file is
written with ``fileio.atomic_path`` (write, then rename), so a killed build leaves no half-written file at a final
path and the next run redoes exactly the stages that did not finish.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wave_deploy import strict_json
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import remove_stale_parts, sha256_bytes, sha256_file, write_json
from wave_deploy.probe import os_platform
from wave_deploy.version import __version__

log = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def stage_key(**parts: Any) -> str:
    """A stable hash over the inputs of a stage (JSON-serialisable parts) and the package version."""
    payload = json.dumps({"wave_deploy": __version__, **parts}, sort_keys=True, default=str)
    return sha256_bytes(payload.encode("utf-8"))[:16]


@dataclass
class StageOutput:
    """What a stage function returns: a JSON-able result and the files it wrote (relative to out_dir)."""

    result: dict[str, Any]
    files: list[str]


@dataclass
class StageRecord:
    name: str
    key: str
    outputs: dict[str, str]  # relative path -> sha256
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


def _versions() -> dict[str, str]:

    out = {"python": sys.version.split()[0], "platform": os_platform(), "wave_deploy": __version__}
    for pkg in ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript", "numpy", "tensorrt"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _manifest_problem(data: Any) -> str | None:
    """What is wrong with the shape of a manifest's data, or None (types only: keys are checked on use)."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    stages = data.get("stages", [])
    if not isinstance(stages, list):
        return f"'stages' must be a list, got {type(stages).__name__}"
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
            return f"stages[{i}] must be an object with a 'name'"
        outputs = stage.get("outputs", {})
        if not isinstance(outputs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in outputs.items()
        ):
            return f"stages[{i}].outputs must map file names to sha256 strings"
        if not isinstance(stage.get("key", ""), str) or not isinstance(stage.get("result", {}), dict):
            return f"stages[{i}]: 'key' must be a string and 'result' an object"
        seconds = stage.get("seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return f"stages[{i}].seconds must be a number"
    return None


class StageRunner:
    """Runs the stages of one output directory and keeps its manifest up to date after every stage."""

    def __init__(self, out_dir: str | Path, *, config: dict[str, Any], force: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for part in remove_stale_parts(self.out_dir):  # left by a run killed mid-write
            log.info("removed %s, left behind by an interrupted run", part)
        self.manifest_path = self.out_dir / MANIFEST
        self.force = force
        self.config = config
        # What the directory recorded before this run, --force or not: the evidence a report must match
        # (a kept device measurement) is checked against it even when no stage is reused.
        self.recorded: dict[str, str] = {}
        if force:
            self.previous: dict[str, dict] = {}
            try:
                self.recorded = outputs_of(_read_stages(self.manifest_path))
            except InvalidInputError:  # --force rewrites an unreadable manifest
                pass
        else:
            self.previous = _read_stages(self.manifest_path)
            self.recorded = outputs_of(self.previous)
        self.records: dict[str, StageRecord] = {}

    def _still_valid(self, prev: dict, key: str) -> bool:
        if prev.get("key") != key:
            return False
        for rel, digest in prev.get("outputs", {}).items():
            path = self.out_dir / rel
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def run(self, name: str, key: str, fn: Callable[[Path], StageOutput]) -> StageRecord:
        """Run ``fn(out_dir) -> StageOutput`` unless a valid cached result for ``key`` exists."""
        prev = self.previous.get(name)
        if prev is not None and self._still_valid(prev, key):
            record = StageRecord(
                name, key, prev["outputs"], prev.get("seconds", 0.0), prev.get("result", {}), reused=True
            )
            log.info("stage %s: reused (key %s)", name, key)
        else:
            t0 = time.perf_counter()
            out = fn(self.out_dir)
            seconds = time.perf_counter() - t0
            missing = [rel for rel in out.files if not (self.out_dir / rel).is_file()]
            if missing:
                raise RuntimeError(f"stage {name} did not write {', '.join(missing)}")
            hashes = {rel: sha256_file(self.out_dir / rel) for rel in sorted(out.files)}
            record = StageRecord(name, key, hashes, round(seconds, 3), out.result)
            log.info("stage %s: done in %.1f s", name, seconds)
        self.records[name] = record
        self.write_manifest()
        return record

    def write_manifest(self, extra: dict[str, Any] | None = None) -> None:
        # Keep records of stages that were valid before and not rerun yet, so a resumed build can reuse them.
        stages = dict(self.previous)
        for name, rec in self.records.items():
            stages[name] = {
                "name": rec.name,
                "key": rec.key,
                "outputs": rec.outputs,
                "seconds": rec.seconds,
                "result": rec.result,
                "reused": rec.reused,
            }
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "versions": _versions(),
            "config": self.config,
            "stages": list(stages.values()),
            **(extra or {}),
        }
        write_json(self.manifest_path, manifest)


def _read_stages(path: Path) -> dict[str, dict]:
    """The stage records of the manifest at ``path`` by name ({} when there is none, or it is of another
    schema version); InvalidInputError naming it when it is not strict JSON or not a manifest."""
    if not path.exists():
        return {}
    hint = f"delete {path} or rerun with --force"
    try:
        data = strict_json.read(path, "manifest")
    except InvalidInputError as exc:
        raise InvalidInputError(exc.message, hint=hint) from None
    if isinstance(data, dict) and data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        return {}
    problem = _manifest_problem(data)
    if problem:
        raise InvalidInputError(f"invalid manifest {path}: {problem}", hint=hint)
    return {s["name"]: s for s in data["stages"]}


def outputs_of(stages: dict[str, dict]) -> dict[str, str]:
    """Every output the stage records list (relative path -> sha256); a path recorded twice keeps the record
    of the later stage."""
    out: dict[str, str] = {}
    for stage in stages.values():
        out.update(stage.get("outputs", {}))
    return out


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """``out_dir``/manifest.json, strictly read and shape-checked; None when there is none."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    data = strict_json.read(path, "manifest")
    problem = _manifest_problem(data)
    if problem or data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise InvalidInputError(f"invalid manifest {path}: {problem or 'not of schema_version 1'}")
    return data


def record_outputs(
    out_dir: str | Path, stage: str, outputs: dict[str, str], *, key: str | None = None
) -> None:
    """Make ``outputs`` (relative path -> sha256) the recorded outputs of ``stage`` in out_dir/manifest.json,
    keeping the other stages and the stage's key unless ``key`` is given (a manifest is created where there
    is none).

    A report written outside a build's stage run (a merged device measurement, a failure report) records
    what it wrote, so every file a verdict rests on is always the one the manifest names.
    """
    path = Path(out_dir) / MANIFEST
    manifest = read_manifest(out_dir) or {"schema_version": MANIFEST_SCHEMA_VERSION, "stages": []}
    stages = manifest["stages"]
    record = next((s for s in stages if s["name"] == stage), None)
    if record is None:
        record = {"name": stage, "key": "", "result": {}, "seconds": 0.0, "reused": False}
        stages.append(record)
    record["outputs"] = dict(sorted(outputs.items()))
    if key is not None:
        record["key"] = key
    write_json(path, manifest)


def shared_model_problem(shared: Path, key: str, spec_dict: dict) -> str | None:
    """Why ``shared`` (``.models/<key>/``) cannot be reused as the model trained for ``key``, or None."""
    from wave_deploy.training.folding import (
        read_folded_header,  # imports torch: only when a build checks a model
    )

    model, record = shared / "model.safetensors", shared / "train.json"
    if not model.is_file() or not record.is_file():
        return "incomplete (no model.safetensors or train.json)"
    try:
        if not isinstance(json.loads(record.read_text(encoding="utf-8")), dict):
            return "train.json is not a JSON object"
        spec, extra = read_folded_header(model)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, InvalidInputError) as exc:
        return " ".join(str(exc).split())[:200]
    if extra.get("train_key") != key or spec.to_dict() != spec_dict:
        return "model.safetensors was written for other training settings"
    return None
