"""Stage 1 of WAVE (DESIGN 3.2): condense an ancestry model into a TemplateBank by distillation.

An auxiliary WaveViT (depth L_aux, width D_aux; templates AND scalers trainable) learns from a frozen teacher
with loss = alpha * tau^2 * KL(teacher || student) + (1 - alpha) * CE. With ``elastic`` (default on), every
step also trains one sub-network cut out of the auxiliary model exactly as stage 2 cuts a target
(``slicing.slice_scalers``: width prefix, layers by relative depth), sampled from the sizes the bank will serve
(the "sandwich": the full model every step plus one sampled size; cf. the width-wise stochastic scaling of the
SWEET follow-up). This is what makes a sliced initialization a working model rather than a fragment.

Before anything is trained (wave.stage1.inputs): the bank's geometry comes from the teacher unless an option
says otherwise (wave.stage1.geometry), the teacher gets a head for the data's classes and is judged against
chance (wave.stage1.teacher_check), and a few real steps are timed to estimate the run (wave.stage1.estimate).

The same code runs under ``torchrun --nproc_per_node N`` (wave_deploy.training.loop handles DDP); only rank 0 writes.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import check_writable_dir, check_writable_file, remove_stale_parts
from wave_deploy.spec import ViTSpec
from wave_deploy.training import distributed
from wave_deploy.training.loop import TrainConfig, distill_loss_fn, distillation_loss, evaluate, train
from wave_deploy.version import __version__
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.model import WaveViT
from wave_deploy.wave.provenance import portable_command, portable_provenance
from wave_deploy.wave.slicing import SlicedModel, Subnet
from wave_deploy.wave.stage1 import estimate as stage1_estimate
from wave_deploy.wave.stage1.inputs import Stage1Inputs, TeacherSource, prepare
from wave_deploy.wave.stage1.teacher import load_teacher  # noqa: F401  (re-exported: stage 1's teacher loader)

log = logging.getLogger(__name__)


@dataclass
class LearngeneConfig:
    # The geometry: None = decided from the teacher (wave.stage1.geometry), then filled in before training.
    aux_depth: int | None = None
    aux_embed_dim: int | None = None
    w: int | None = None  # template size (= head_dim by default)
    head_dim: int | None = None
    patch_size: int | None = None
    mlp_ratio: float | None = None
    img_size: int | None = None  # the bank's image size (data are resized to it at load)
    in_chans: int | None = None  # the bank's channels (image folders are converted to it at load)
    n_matrix: int = 16  # templates per matrix kind
    n_vector: int = 4  # templates per vector kind
    max_depth: int | None = None  # deepest target the bank serves (default: aux_depth)
    elastic: bool = True
    steps: int | None = None
    epochs: float | None = None  # exactly one of steps / epochs; neither: 20 epochs
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    tau: float = 2.0
    alpha: float = 0.7
    seed: int = 0


class ElasticStudent(nn.Module):
    """The auxiliary model plus its training objective.

    ``forward(x)`` -> the full auxiliary model's logits (evaluation); ``forward(x, y)`` -> the stage-1 loss.
    The step counter is a buffer so it is checkpointed, resumed, and broadcast from rank 0 under DDP: every
    rank samples the same sub-network at the same step.
    """

    step: Tensor

    def __init__(self, aux: WaveViT, teacher: nn.Module, sizes: list[ViTSpec], config: LearngeneConfig):
        super().__init__()
        self.aux, self.config = aux, config
        self.teacher = teacher.requires_grad_(False).eval()
        self.subnets = [Subnet(s) for s in sizes]
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> ElasticStudent:
        super().train(mode)
        self.teacher.eval()
        return self

    def sampled_subnet(self) -> Subnet | None:
        if not self.config.elastic or not self.subnets:
            return None
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(self.step))
        return self.subnets[int(torch.randint(len(self.subnets), (1,), generator=g))]

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            return self.aux(x)
        c = self.config
        with torch.no_grad():
            t_logits = self.teacher(x)
        loss = distillation_loss(self.aux(x), t_logits, y, tau=c.tau, alpha=c.alpha)
        sub = self.sampled_subnet()
        if sub is not None:
            loss = loss + distillation_loss(sub(self.aux, x), t_logits, y, tau=c.tau, alpha=c.alpha)
        self.step += 1
        return loss


class EstimateStudent(ElasticStudent):
    """The estimate's throw-away student: step i trains ``sizes[min(i, len(sizes) - 1)]`` instead of a sampled
    sub-size (the largest first, for the peak memory, then the representative one, timed)."""

    def sampled_subnet(self) -> Subnet | None:
        if not self.config.elastic or not self.subnets:
            return None
        return self.subnets[min(int(self.step), len(self.subnets) - 1)]


@dataclass
class Stage1Checks:
    """The checks before training: a weak teacher stops the run unless allowed; an estimate over ``max_hours``
    stops it. ``estimate_steps`` timed steps (after one warm-up); 0 skips the estimate and its limit."""

    allow_weak_teacher: bool = False
    max_hours: float = 4.0
    estimate_steps: int = 2


def bank_geometry(config: LearngeneConfig, img_size: int, in_chans: int, num_classes: int) -> BankGeometry:
    unresolved = [
        k for k in ("aux_depth", "aux_embed_dim", "w", "head_dim", "patch_size") if getattr(config, k) is None
    ]
    if unresolved:
        raise InvalidInputError(f"stage 1 geometry not resolved: {', '.join(unresolved)}")
    return BankGeometry.create(
        n_matrix=config.n_matrix,
        n_vector=config.n_vector,
        img_size=img_size,
        patch_size=config.patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        w=config.w,
        head_dim=config.head_dim,
        mlp_ratio=4.0 if config.mlp_ratio is None else config.mlp_ratio,
        max_depth=config.max_depth or config.aux_depth,
        max_embed_dim=config.aux_embed_dim,
    )


def elastic_sizes(geom: BankGeometry, aux_spec: ViTSpec) -> list[ViTSpec]:
    """Every producible (depth, width) no larger than the auxiliary model, except the auxiliary model itself."""
    sizes = []
    for depth in range(1, aux_spec.depth + 1):
        for dim in geom.valid_embed_dims():
            if dim <= aux_spec.embed_dim and (depth, dim) != (aux_spec.depth, aux_spec.embed_dim):
                sizes.append(geom.make_spec(depth, dim))
    return sizes


def build_bank(
    inputs: Stage1Inputs,
    config: LearngeneConfig,
    checks: Stage1Checks | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    on_step=None,
    on_note: Callable[[str], None] | None = None,
    device: str = "auto",
) -> tuple[TemplateBank, dict[str, Any]]:
    """Estimate (``checks``), train the auxiliary model, return its bank (with provenance) and a run summary.

    ``inputs``: the teacher, data and judged accuracy (``stage1_inputs.prepare``); ``config``: resolved.
    """
    checks = checks or Stage1Checks()
    data, info = inputs.data, inputs.data.info
    x_tr, y_tr, x_va, y_va = data.train_x, data.train_labels, data.val_x, data.val_labels
    geom = bank_geometry(config, x_tr.shape[-1], x_tr.shape[1], info.num_classes)
    if config.aux_depth is None:  # bank_geometry refused this already
        raise InvalidInputError("stage 1 geometry not resolved: aux_depth")
    aux_spec = geom.make_spec(config.aux_depth, geom.max_embed_dim)
    aux = WaveViT(
        TemplateBank.init_random(geom, seed=config.seed), aux_spec, train_templates=True, seed=config.seed
    )
    sizes = elastic_sizes(geom, aux_spec)
    teacher = inputs.teacher
    student = ElasticStudent(aux, teacher, sizes, config)
    tcfg = TrainConfig(
        steps=config.steps,
        epochs=config.epochs if config.steps or config.epochs else 20,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        seed=config.seed,
        device=device,
        checkpoint_every=checkpoint_every,
    )
    probes = _probe_sizes(geom, aux_spec)
    estimate = None
    if checks.estimate_steps > 0:
        rep = stage1_estimate.representative_size(sizes) if config.elastic else None
        big = stage1_estimate.largest_size(sizes) if config.elastic else None
        peak = big if big is not None and big != rep else None  # its step: the run's peak memory
        order = [s for s in (peak, rep) if s is not None]
        estimate = stage1_estimate.estimate(
            lambda: EstimateStudent(copy.deepcopy(aux), teacher, order, config),
            lambda s: list(s.aux.parameters()),
            tcfg,
            data,
            total_steps=tcfg.total_steps(len(x_tr) // config.batch_size),
            start_step=stage1_estimate.steps_done(
                None if checkpoint_dir is None else Path(checkpoint_dir), resume
            ),
            final_passes=1 + len(probes),
            timed=checks.estimate_steps,
            peak_size=peak,
        )
        _check_hours(estimate, checks, config)  # over the limit: the error carries the estimate
        if on_note is not None:
            on_note(estimate.line())
    result = train(
        student, tcfg, x_tr, y_tr, x_va, y_va, params=list(aux.parameters()), loss_fn=distill_loss_fn,
        checkpoint_dir=checkpoint_dir, resume=resume, on_step=on_step,
    )  # fmt: skip
    aux.eval()
    where = torch.device(result.device)
    accuracies = {"teacher": inputs.verdict.accuracy, "aux": _accuracy(aux, x_va, y_va, where)}
    for spec in probes:
        accuracies[f"L{spec.depth}_D{spec.embed_dim}_sliced"] = _accuracy(
            SlicedModel(aux, spec), x_va, y_va, where
        )
    aux.cpu()
    teacher.cpu()
    verdict = inputs.verdict.to_dict()
    provenance = {
        "ancestry": inputs.info,
        "data": info.to_dict(),
        "schedule": {**asdict(config), "steps_run": result.steps},
        "geometry_sources": inputs.geometry.sources,
        "teacher_check": {**verdict, "allowed_weak": bool(verdict["weak"] and checks.allow_weak_teacher)},
        "estimate": None if estimate is None else estimate.to_dict(),
        "val_accuracy": accuracies,
        "wave_deploy": __version__,
        "torch": torch.__version__,
        "command": portable_command(sys.argv),  # no absolute path of this machine
    }
    bank = aux.export_bank(portable_provenance(provenance))  # data.source etc.: no absolute paths
    summary = {
        "accuracies": accuracies,
        "train": result.to_dict(),
        "estimate": provenance["estimate"],
        "teacher_check": provenance["teacher_check"],
        "geometry": inputs.geometry.to_dict(),
    }
    return bank, summary


def _check_hours(estimate: stage1_estimate.Estimate, checks: Stage1Checks, config: LearngeneConfig) -> None:
    """Stop before training (exit 3) when the estimate is over ``checks.max_hours``, naming what shortens it."""
    if estimate.seconds <= checks.max_hours * 3600:
        return
    tokens = (config.img_size // config.patch_size) ** 2 if config.img_size and config.patch_size else None
    gpu = ", a GPU (--device cuda)" if estimate.device == "cpu" else ""
    raise InvalidInputError(
        f"stage 1 would take about {stage1_estimate.clock(estimate.seconds)} ({estimate.steps:,} steps x "
        f"{estimate.seconds_per_step:.3g} s on {estimate.device}), over --max-hours {checks.max_hours:g}",
        hint=f"shorten it: a larger --patch-size (now {config.patch_size}: {tokens} tokens per image), a smaller "
        f"--aux-depth/--aux-embed-dim (now {config.aux_depth}/{config.aux_embed_dim}), fewer --steps/--epochs "
        f"(now {estimate.steps:,} steps){gpu}; or raise --max-hours",
        details={"estimate": estimate.to_dict()},
    )


def build_bank_file(
    out: str | Path,
    config: LearngeneConfig,
    *,
    teacher_name: str | None = None,
    pretrained: bool = False,
    teacher_checkpoint: str | Path | None = None,
    teacher_arch: str | None = None,
    data_path: str | Path | None = None,
    classes: list[int | str] | None = None,
    checks: Stage1Checks | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = 100,
    resume: bool = False,
    on_step=None,
    on_note: Callable[[str], None] | None = None,
    device: str = "auto",
) -> dict[str, Any] | None:
    """``wave-deploy templates build``: load the teacher and the data, check, estimate, run stage 1, write ``out``.

    The teacher is a timm model by name (``teacher_name``) or a checkpoint (see ``teacher.load_teacher``); the
    bank's geometry is ``config``'s where given, else the teacher's (``stage1_geometry``). ``classes`` keeps
    only those classes (indices or names). A teacher near chance stops the run (exit 3) unless
    ``checks.allow_weak_teacher``; an estimate over ``checks.max_hours`` stops it too. Checkpoints go to
    ``checkpoint_dir``, default ``<out without .safetensors>.ckpt``. ``on_note(text)`` receives the human lines
    (geometry, teacher, estimate). Returns {"bank", "accuracies", "steps", "train_time_s", "estimate",
    "teacher_check", "geometry"} on the main process; None on the other ranks of a torchrun launch.
    """
    ckpt_dir = (
        Path(checkpoint_dir) if checkpoint_dir else Path(str(out).removesuffix(".safetensors") + ".ckpt")
    )
    # before any work: both paths must be writable (exit 3 naming the path)
    if Path(out).suffix == ".safetensors":
        check_writable_file(out, "--out")
    else:
        check_writable_dir(out, "--out")
    check_writable_dir(ckpt_dir, "--checkpoint-dir")
    remove_stale_parts(ckpt_dir)  # temporary files of a killed earlier run
    checks = checks or Stage1Checks()
    source = TeacherSource(teacher_name, pretrained, teacher_checkpoint, teacher_arch)
    inputs, config = prepare(source, config, data_path=data_path, classes=classes, device=device)
    note = on_note if on_note is not None and distributed.is_main_process() else (lambda text: None)
    verdict, head = inputs.verdict, inputs.info.get("head", {})
    probed = (
        f" (head fitted by a linear probe: {head['train_accuracy']:.1%} on train)"
        if head.get("probed")
        else ""
    )
    if verdict.weak and not checks.allow_weak_teacher:
        raise InvalidInputError(
            f"the teacher is near chance: {verdict.describe()}; a teacher to learn from needs p < 0.01 and at "
            f"least {verdict.threshold:.1%}{probed}",
            hint="use --pretrained (timm's weights), or a --teacher-checkpoint fine-tuned on these classes "
            "(--teacher-arch for a timm state dict); --allow-weak-teacher distils it anyway",
            details={"teacher_check": verdict.to_dict()},
        )
    judged = "near chance, distilled anyway (--allow-weak-teacher)" if verdict.weak else "better than chance"
    note(_geometry_line(inputs, config))  # after the check: a refused run prints its one error line only
    note(f"teacher: {verdict.describe()}{probed}: {judged}")
    bank, summary = build_bank(
        inputs, config, checks, checkpoint_dir=ckpt_dir, checkpoint_every=checkpoint_every, resume=resume,
        on_step=on_step, on_note=note, device=device,
    )  # fmt: skip
    if not distributed.is_main_process():
        return None
    path = bank.save(out)
    return {
        "bank": str(path),
        "accuracies": summary["accuracies"],
        "steps": summary["train"]["steps"],
        "train_time_s": round(summary["train"]["train_time_s"], 1),
        "estimate": summary["estimate"],
        "teacher_check": summary["teacher_check"],
        "geometry": summary["geometry"],
    }


def _geometry_line(inputs: Stage1Inputs, config: LearngeneConfig) -> str:
    src = inputs.geometry.sources
    return (
        f"bank geometry: {config.img_size} px ({src['img_size']}), {config.in_chans} channel(s) ({src['in_chans']}), "
        f"patch {config.patch_size} ({src['patch_size']}), head size {config.head_dim} ({src['head_dim']}), "
        f"template size {config.w} ({src['w']}), MLP ratio {config.mlp_ratio:g} ({src['mlp_ratio']}); auxiliary "
        f"model depth {config.aux_depth} ({src['aux_depth']}), width {config.aux_embed_dim} ({src['aux_embed_dim']})"
    )


def _probe_sizes(geom: BankGeometry, aux_spec: ViTSpec) -> list[ViTSpec]:
    """A few sub-sizes whose sliced accuracy the provenance records (smallest, middle, aux width at half depth)."""
    dims = geom.valid_embed_dims()
    picks = {(1, dims[0]), (max(1, aux_spec.depth // 2), dims[len(dims) // 2]), (aux_spec.depth, dims[0])}
    return [geom.make_spec(d, e) for d, e in sorted(picks) if e <= aux_spec.embed_dim]


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> float:
    _, acc = evaluate(model, x, y, batch_size=512, device=device)
    return round(acc, 4)
