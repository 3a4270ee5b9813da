"""wave-deploy from Python: the same jobs as the shell commands, for release scripts.

    import wave_deploy

    selection = wave_deploy.plan("jetson")                         # which ViT size fits (no training)
    record = wave_deploy.init("out/init", depth=2, embed_dim=64)   # WAVE stage 2 -> folded timm checkpoint
    summary = wave_deploy.export("out/init/model.safetensors", "jetson", "out/export")
    results = wave_deploy.build(["jetson"], out="artifacts")       # plan -> train -> export -> bench -> report

Each job's keyword arguments are the fields of its options model in ``wave_deploy.options`` (``PlanOptions``,
``InitOptions``, ``ExportOptions``, ``BuildOptions``): the same models, bounds and help as the command line's
flags (``help(wave_deploy.build)`` lists them). A bad or unknown option raises ``UsageError`` (exit code 2);
bad input raises another ``wave_deploy.errors.WaveDeployError`` subclass whose ``exit_code`` is the command's.
``import wave_deploy`` stays cheap: torch and the rest load when a function is first called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wave_deploy.errors import UsageError
from wave_deploy.options import BuildOptions, ExportOptions, InitOptions, PlanOptions, api, parse
from wave_deploy.version import __version__

if TYPE_CHECKING:
    from wave_deploy.pipeline.results import DeviceResult
    from wave_deploy.planning.selection import Selection

__all__ = ["__version__", "build", "export", "init", "plan"]


@api(PlanOptions, "profile")
def plan(profile: str | Path, **options: Any) -> Selection:
    """Choose the ViT size that fits ``profile``'s budgets (``wave-deploy plan``).

    ``profile``: a shipped profile's name or alias, or a YAML path. Returns the ``Selection`` (``.chosen``,
    ``.candidates``, ``.frontier``, ``.to_dict()``); raises NoFeasibleModelError (exit 5) when no size fits.
    ``img_size`` takes one size or a list (the profile then chooses the resolution too).
    """
    from wave_deploy.planning.plan import plan as run_plan

    selection, _inputs = run_plan(profile, parse(PlanOptions, options, "plan"))
    return selection


@api(InitOptions, "out")
def init(out: str | Path, **options: Any) -> dict[str, Any]:
    """Initialize one ViT size from weight templates and fold it into timm (``wave-deploy init``).

    Writes ``out``/model.safetensors (a plain timm state dict, its spec in the metadata) and ``out``/init.json,
    and returns that record (spec, accuracy at initialization and after training, timings).
    """
    from wave_deploy.wave.init import init_model

    return init_model(out, parse(InitOptions, options, "init"))


@api(BuildOptions, "profiles")
def build(profiles: str | Sequence[str], **options: Any) -> list[DeviceResult]:
    """Build the model for each profile: plan, train, fold, export, benchmark, report (``wave-deploy build``).

    ``profiles``: one profile or several (names, aliases or YAML paths); each writes ``out``/<name>/.
    Returns one ``DeviceResult`` per profile (``.report`` is report.json, ``.verdict`` "pass" or "fail",
    ``.exit_code``); a broken budget is a verdict, not an exception.
    """
    from wave_deploy.pipeline.build import build as run_build

    parsed = parse(BuildOptions, options, "build")
    names = [profiles] if isinstance(profiles, (str, Path)) else list(profiles)
    if not names:  # the command line's rule: at least one --profile
        raise UsageError("build: give at least one profile, e.g. wave_deploy.build('jetson')")
    return run_build([str(p) for p in names], parsed)


@api(ExportOptions, "checkpoint", "profile", "out")
def export(checkpoint: str | Path, profile: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Export a folded checkpoint for a device profile (``wave-deploy export``).

    Writes ``out``/model.onnx (parity-checked against PyTorch in ONNX Runtime; ParityError past fp32 1e-4),
    the fp16 and int8 variants judged by top-1 on ``data``'s validation split (int8 calibrated on its training
    images), and for TensorRT targets an engine or an on-device bundle; returns the export.json summary.
    Raises ParityError (exit 7) when the profile's own precision failed its accuracy gate, after export.json
    is written: the same gate as the command and the build.
    """
    from wave_deploy.exporters.base import export_checkpoint, precision_gate

    summary = export_checkpoint(checkpoint, profile, out, parse(ExportOptions, options, "export"))
    gate = precision_gate(summary)
    if gate is not None:
        raise gate
    return summary
