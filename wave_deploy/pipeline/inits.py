"""How a build's model starts (``build --init``) and what it starts from.

- ``wave``: the bank's templates and scalers (``wave.init.initialize``: scaler phase, fold, dense phase);
- ``weight-selection``: weights selected from a teacher checkpoint (``training.baselines.weight_selection``,
  Xu et al. 2024: the teacher's first blocks, uniformly spaced elements), then dense steps; no bank;
- ``random``: timm's own initialization (``training.baselines.random_init``), then dense steps; no templates.

``resolve_sources`` decides, before any image is decoded, what a build reads and where its search space's
geometry (patch size, channels, head size, MLP ratio, the largest depth and width) comes from, by the rule
of ``pipeline.geometry_source.search_geometry`` (torch-free: ``plan --init`` uses the same):

    wave              the bank's (refused, exit 3, when its channels are not the data's)
    weight-selection  the teacher's: depth and width up to the teacher's (selection cuts a smaller model)
    random            the bank's when --templates is given; else the teacher's when one is given; else
                      ``default_geometry`` at the data's image size and channels (docs/decisions.md)

A build that is not ``wave`` trains densely for the FLOPs of the build's whole schedule: scaler + dense steps
of dense training (``run_init``); ``--compare-init`` gives every initialization exactly one FLOPs budget
(``pipeline.compare_init``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wave_deploy.data_shape import DataShape, check_bank_channels, describe_channels
from wave_deploy.errors import InvalidInputError, first_line
from wave_deploy.fileio import sha256_file
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.geometry_source import check_objective as check_objective_for
from wave_deploy.pipeline.geometry_source import search_geometry, wants_bank
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init, weight_selection
from wave_deploy.training.compute import dense_step_flops, dense_steps_within, scaler_step_flops
from wave_deploy.training.folding import load_folded
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.stage1.teacher import load_teacher

log = logging.getLogger(__name__)

INITS = ("wave", "weight-selection", "random")
SIMPLICITY = {
    "random": 0,
    "weight-selection": 1,
    "wave": 2,
}  # what an init needs besides the data, least first


@dataclass(frozen=True)
class Teacher:
    """A timm VisionTransformer whose weights weight selection cuts from, its spec and its provenance."""

    model: Any
    spec: ViTSpec
    info: dict[str, Any]


@dataclass(frozen=True)
class Sources:
    """What a build initializes from, resolved before the data is decoded."""

    geometry: BankGeometry  # the search space's geometry
    geometry_source: str  # "bank" | "teacher" | "default"
    bank: Any = None  # TemplateBank, or None
    bank_path: Path | None = None
    bank_problem: str | None = None  # why WAVE cannot run on this data (a comparison then skips it)
    teacher: Teacher | None = None

    def key(self) -> dict[str, Any]:
        """What the plan and train stages' cache keys need of the sources."""
        return {
            "geometry": self.geometry.to_dict(),
            "geometry_source": self.geometry_source,
            "bank_sha256": sha256_file(self.bank_path) if self.bank_path is not None else None,
            "teacher": None if self.teacher is None else self.teacher.info.get("checkpoint_sha256"),
        }


def vit_spec_of(model) -> ViTSpec:
    """The ViTSpec of a timm VisionTransformer (InvalidInputError for any other model)."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer) or not len(model.blocks):
        raise InvalidInputError(
            f"weight selection needs a timm VisionTransformer teacher, got {type(model).__name__}"
        )
    pe: Any = model.patch_embed
    block: Any = model.blocks[0]
    return ViTSpec(
        depth=len(model.blocks), embed_dim=model.embed_dim, num_heads=block.attn.num_heads,
        mlp_ratio=block.mlp.fc1.out_features / model.embed_dim, patch_size=pe.patch_size[0],
        img_size=pe.img_size[0], in_chans=pe.proj.in_channels, num_classes=model.num_classes,
    )  # fmt: skip


def _head_classes(path: Path, arch: str | None) -> int | None:
    """The classes a teacher checkpoint's head predicts, read without building the model (None: unknown)."""

    if not path.is_file():
        raise InvalidInputError(f"teacher checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                if arch is None:
                    return int(json.loads((fh.metadata() or {})["spec"])["num_classes"])
                return fh.get_slice("head.weight").get_shape()[0] if "head.weight" in fh.keys() else None  # noqa: SIM118
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        head = state.get("head.weight") if isinstance(state, dict) else None
        return int(head.shape[0]) if head is not None else None
    except (KeyError, ValueError, TypeError):
        return None  # load_teacher says what is wrong with the file
    except Exception as exc:  # safetensors and torch raise their own types for unreadable files
        raise InvalidInputError(f"cannot read teacher checkpoint {path}: {first_line(exc)}") from exc


def load_selection_teacher(checkpoint: str | Path, arch: str | None, num_classes: int) -> Teacher:
    """The teacher of weight selection, through ``wave.stage1.teacher.load_teacher`` with its own head's classes
    (the data's when the checkpoint does not say). A headless backbone (a self-supervised state dict without a
    classifier: DINO, DINOv2, MAE) gets a head of the data's classes marked ``info["headless"]``: there is
    nothing to select from it, so the student's head is timm's fresh init (``selected_model``)."""

    path = Path(checkpoint)
    classes = _head_classes(path, arch) or num_classes
    model: Any
    model, info = load_teacher(checkpoint=path, arch=arch, num_classes=classes)
    if model.num_classes == 0:
        model.reset_classifier(num_classes)
        info = {**info, "headless": True}
    return Teacher(model, vit_spec_of(model), info)


def resolve_sources(options: BuildOptions, shape: DataShape) -> Sources:
    """The bank, teacher and search-space geometry of a build (see the module docstring). Raises before any
    image is decoded: a bank or teacher of other channels is exit 3, a missing teacher exit 2."""

    teacher = None
    if options.teacher_checkpoint is not None:
        teacher = checked_teacher(options.teacher_checkpoint, options.teacher_arch, shape)
    bank = bank_path = problem = None
    if wants_bank(options.init, options.templates):
        bank_path = Path(options.templates) if options.templates else default_bank_path()
        bank = TemplateBank.load(bank_path)
        given = options.templates is not None
        if not options.compare_init or given:
            check_bank_channels(shape, bank.geometry.in_chans, bank_path)  # the same refusal as plan's
        elif shape.in_chans != bank.geometry.in_chans:
            problem = (f"the bank {bank_path.name} takes {describe_channels(bank.geometry.in_chans)}, the data "
                       f"is {describe_channels(shape.in_chans)}")  # fmt: skip
            bank = bank_path = None
    geometry, source = search_geometry(
        options.init, shape, bank=None if bank is None else bank.geometry,
        teacher=None if teacher is None else teacher.spec, img_size=options.img_size,
    )  # fmt: skip
    if source == "bank":
        return Sources(geometry, source, bank, bank_path, problem, teacher)
    return Sources(geometry, source, None, None, problem, teacher)


def checked_teacher(checkpoint: str, arch: str | None, shape: DataShape) -> Teacher:
    """The teacher of weight selection (``load_selection_teacher``) for data of ``shape``: a teacher of other
    channels is refused (exit 3) before any image is decoded; build and ``plan --teacher-checkpoint`` alike."""
    teacher = load_selection_teacher(checkpoint, arch, shape.num_classes)
    if teacher.spec.in_chans != shape.in_chans:
        raise InvalidInputError(
            f"data {shape.source}: images are {describe_channels(shape.in_chans)} but the teacher "
            f"{Path(checkpoint).name} takes {describe_channels(teacher.spec.in_chans)}"
        )
    return teacher


def applicable(init: str, sources: Sources, spec: ViTSpec) -> str | None:
    """Why ``init`` cannot make ``spec`` from ``sources`` (None: it can)."""
    if init == "wave":
        if sources.bank is None:
            return sources.bank_problem or "no template bank"
        problems = sources.bank.geometry.problems(spec)
        return "; ".join(problems) or None
    if init == "weight-selection":
        if sources.teacher is None:
            return "no teacher (--teacher-checkpoint)"
        t = sources.teacher.spec
        bad = [f"{n} {getattr(spec, n)} > the teacher's {getattr(t, n)}" for n in ("depth", "embed_dim", "mlp_hidden")
               if getattr(spec, n) > getattr(t, n)]  # fmt: skip
        bad += [f"{n} {getattr(spec, n)} != the teacher's {getattr(t, n)}" for n in ("patch_size", "in_chans")
                if getattr(spec, n) != getattr(t, n)]  # fmt: skip
        return "; ".join(bad) or None
    return None


def selected_model(teacher: Teacher, spec: ViTSpec, seed: int):
    """Weight selection from ``teacher`` into ``spec``; at another image size, the selected position
    embedding is resampled as timm resamples it."""
    from timm.layers import resample_abs_pos_embed

    at_teacher = dataclasses.replace(spec, img_size=teacher.spec.img_size)
    new_task = True if teacher.info.get("headless") else None  # no head to select from a backbone
    model = weight_selection(teacher.model, teacher.spec, at_teacher, seed=seed, new_task=new_task)
    if spec.img_size == teacher.spec.img_size:
        return model
    state = dict(model.state_dict())
    grid = spec.img_size // spec.patch_size
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [grid, grid], num_prefix_tokens=1)
    return load_folded(state, spec).train()


def run_init(
    init: str, sources: Sources, spec: ViTSpec, data, options: BuildOptions, *, seed: int,
    budget_flops: int | None = None, on_step=None, checkpoint_dir: Path | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Initialize ``spec`` by ``init`` and train it: (timm VisionTransformer, record).

    ``budget_flops`` None: the build's schedule (wave: scaler + dense steps; the others: that many dense
    steps). Given: wave runs its scaler steps (fewer if they alone would pass the budget) and the dense steps
    the rest pays for; the others run the dense steps it pays for (training.compute's accounting)."""

    from wave_deploy.training.loop import evaluate, train
    from wave_deploy.wave.init import phase_record, phases

    reason = applicable(init, sources, spec)
    if reason is not None:
        raise InvalidInputError(f"--init {init} cannot make {spec.name}: {reason}")
    opts = options.model_copy(update={"seed": seed})
    scaler_steps, dense_steps = options.phase_steps(len(data.train_x))
    batch = options.batch_size
    if init == "wave":
        model, record = _run_wave(sources, spec, data, opts, scaler_steps, dense_steps, budget_flops,
                                  on_step=on_step, checkpoint_dir=checkpoint_dir)  # fmt: skip
        return model, {**record, "init": init, "seed": seed}
    steps = (
        scaler_steps + dense_steps if budget_flops is None else dense_steps_within(budget_flops, spec, batch)
    )
    t0 = time.perf_counter()
    if init == "random":
        model = random_init(spec, seed)
    elif sources.teacher is None:  # applicable() refused this already
        raise InvalidInputError(f"--init {init} cannot make {spec.name}: no teacher (--teacher-checkpoint)")
    else:
        model = selected_model(sources.teacher, spec, seed)
    _, acc0 = evaluate(model.eval(), data.val_x, data.val_labels, 512, torch.device("cpu"))
    _, dense = phases(opts, 0, steps)
    result = None
    if steps:
        result = train(model, dense.config(options.device), data.train_x, data.train_labels, data.val_x,
                       data.val_labels, on_step=on_step, checkpoint_dir=checkpoint_dir,
                       resume=checkpoint_dir is not None)  # fmt: skip
    model = model.cpu().eval()
    _, acc = evaluate(model, data.val_x, data.val_labels, 512, torch.device("cpu"))
    record = {
        "spec": spec.to_dict(), "init": init, "seed": seed, "val_acc_at_init": acc0, "scaler_phase": None,
        "dense_phase": phase_record(result), "val_acc": acc, "training_flops": steps * dense_step_flops(spec, batch),
        "teacher": sources.teacher.info if init == "weight-selection" and sources.teacher else None,
        "total_s": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    return model, record


def _run_wave(
    sources: Sources, spec: ViTSpec, data, options: BuildOptions, scaler_steps: int, dense_steps: int,
    budget_flops: int | None, *, on_step, checkpoint_dir: Path | None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """WAVE's stage 2 (``wave.init.initialize``); its scaler phase distils from the bank's auxiliary model (at
    the target's image size) on the bank's own task, and that teacher's forwards count in its FLOPs."""
    from wave_deploy.wave.init import initialize, is_bank_task, phases

    bank, batch = sources.bank, options.batch_size
    aux = bank.aux_spec if is_bank_task(bank, data.info.class_names) else None
    teacher = None if aux is None else dataclasses.replace(aux, img_size=spec.img_size)
    per_scaler = scaler_step_flops(spec, batch, teacher)
    if budget_flops is not None:
        scaler_steps = min(scaler_steps, int(budget_flops // per_scaler))
        dense_steps = dense_steps_within(budget_flops - scaler_steps * per_scaler, spec, batch)
    scaler, dense = phases(options, scaler_steps, dense_steps)
    model, record = initialize(
        bank, spec, data, strategy=options.strategy, scaler=scaler, dense=dense, on_step=on_step,
        device=options.device, checkpoint_dir=checkpoint_dir,
    )  # fmt: skip
    flops = scaler_steps * per_scaler + dense_steps * dense_step_flops(spec, batch)
    return model, {**record, "training_flops": flops}


def check_objective(options: BuildOptions, sources: Sources) -> None:
    """--objective accuracy scores sizes sliced from a bank: a build without one cannot use it (exit 2)."""
    check_objective_for(options.objective, options.init, sources.bank is not None)
