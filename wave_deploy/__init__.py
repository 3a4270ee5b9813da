"""wave-deploy from Python: the same jobs as the shell commands, for release scripts.

    import wave_deploy

    selection = wave_deploy.plan("jetson")                         # which ViT size fits (no training)
    record = wave_deploy.init("out/init", depth=2, embed_dim=64)   # WAVE stage 2 -> folded timm checkpoint
    summary = wave_deploy.export("out/init/model.safetensors", "jetson", "out/export")
    results = wave_deploy.build(["jetson"], out="artifacts")       # plan -> train -> export -> bench -> report

Each function raises a ``wave_deploy.errors.WaveDeployError`` subclass for bad input (its ``exit_code`` is the
command's). ``import wave_deploy`` stays cheap: torch and the rest load when a function is first called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wave_deploy.pipeline.options import DeviceResult
    from wave_deploy.planning.selection import Selection

from wave_deploy.version import __version__

__all__ = ["__version__", "build", "export", "init", "plan"]


def plan(
    profile: str | Path,
    *,
    objective: str = "flops",
    calibration: str | Path | None = None,
    templates: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Selection:
    """Choose the ViT size that fits ``profile``'s budgets (``wave-deploy plan``).

    ``profile``: a shipped profile's name or alias, or a YAML path. ``objective``: "flops" or "params", what to
    maximize among the sizes that fit. ``calibration``: a calibration file to predict latency with (default:
    the profile's own, else the analytic model). ``templates``: the bank whose sizes are the candidates
    (default: the shipped bank). ``overrides``: "SECTION.FIELD=VALUE" changes to the profile for this call.
    Returns the ``Selection`` (``.chosen``, ``.candidates``, ``.frontier``, ``.to_dict()``); raises
    NoFeasibleModelError when no size fits.
    """
    from wave_deploy.planning.latency import load_calibration
    from wave_deploy.planning.selection import SearchSpace, select
    from wave_deploy.profiles import apply_overrides, load_profile
    from wave_deploy.wave.bank_file import default_bank_path, inspect_bank

    loaded = apply_overrides(load_profile(str(profile)), tuple(overrides))
    space = SearchSpace.from_bank(inspect_bank(templates or default_bank_path()).geometry)  # no torch
    cal = load_calibration(calibration) if calibration else None
    return select(loaded, space, objective=objective, calibration=cal)


def init(
    out: str | Path,
    *,
    depth: int,
    embed_dim: int,
    heads: int | None = None,
    templates: str | Path | None = None,
    data: str | Path | None = None,
    strategy: str = "aux",
    scaler_steps: int = 100,
    dense_steps: int = 0,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    img_size: int | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Initialize one ViT size from weight templates and fold it into timm (``wave-deploy init``).

    Writes ``out``/model.safetensors (a plain timm state dict, its spec in the metadata) and ``out``/init.json,
    and returns that record (spec, accuracy at initialization and after training, timings). ``templates``:
    the bank (default: the shipped one); ``data``: an ImageFolder tree (default: the built-in MNIST-5k; other
    classes get a fresh head). ``strategy``: "aux" slices the bank's auxiliary scalers, "random" draws them.
    ``img_size``: the model's input size (default: the bank's; the data are resized to it at load).
    ``compile``: torch.compile the training steps.
    """
    from wave_deploy.wave.init import init_model

    return init_model(
        out,
        depth=depth,
        embed_dim=embed_dim,
        heads=heads,
        bank_path=templates,
        data_path=data,
        strategy=strategy,
        scaler_steps=scaler_steps,
        dense_steps=dense_steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
        img_size=img_size,
        compile=compile,
    )


def build(profiles: str | Sequence[str], **options: Any) -> list[DeviceResult]:
    """Build the model for each profile: plan, train, fold, export, benchmark, report (``wave-deploy build``).

    ``profiles``: one profile or several (names, aliases or YAML paths). ``options`` are the fields of
    ``wave_deploy.pipeline.options.BuildOptions``: out (default "artifacts"; each profile writes
    ``out``/<name>/), templates, data, seed, strategy, scaler_steps, dense_steps, scaler_epochs, dense_epochs, batch_size,
    img_size, objective, calibration, opset, exporter, bench_iterations, bench_warmup, device, compile, force,
    profile_overrides. Returns one ``DeviceResult`` per profile (``.report`` is report.json, ``.verdict``
    "pass" or "fail"); a broken budget is a verdict, not an exception. An unknown option raises UsageError.
    """
    import dataclasses

    from wave_deploy.errors import UsageError
    from wave_deploy.pipeline.build import build as run_build
    from wave_deploy.pipeline.options import BuildOptions

    known = {f.name for f in dataclasses.fields(BuildOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"build: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    names = [profiles] if isinstance(profiles, (str, Path)) else list(profiles)
    return run_build([str(p) for p in names], BuildOptions(**options))


def export(
    checkpoint: str | Path,
    profile: str | Path,
    out: str | Path,
    *,
    opset: int = 18,
    exporter: str = "dynamo",
    slim: bool = False,
    seed: int = 0,
    build_engine: bool = True,
) -> dict[str, Any]:
    """Export a folded checkpoint for a device profile (``wave-deploy export``).

    Writes ``out``/model.onnx (parity-checked against PyTorch in ONNX Runtime; ParityError past fp32 1e-4),
    the precision variant the profile asks for, and for TensorRT targets an engine (GPU and TensorRT here,
    ``build_engine``) or an on-device bundle. Returns the export.json summary.
    """
    from wave_deploy.errors import InvalidInputError
    from wave_deploy.exporters.base import export_for_profile
    from wave_deploy.profiles import load_profile
    from wave_deploy.training.folding import load_folded_file

    if not Path(checkpoint).is_file():
        raise InvalidInputError(f"checkpoint {checkpoint} does not exist")
    loaded = load_profile(str(profile))
    model, spec, _extra = load_folded_file(checkpoint)
    return export_for_profile(
        model,
        spec,
        loaded,
        out,
        opset=opset,
        exporter=exporter,
        slim=slim,
        seed=seed,
        build_engine=build_engine,
    )
