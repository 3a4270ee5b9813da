"""Stage 1 of WAVE (DESIGN 3.2): condense an ancestry model into a TemplateBank by distillation.

An auxiliary WaveViT (depth L_aux, width D_aux; templates AND scalers trainable) learns from a frozen teacher
with loss = alpha * tau^2 * KL(teacher || student) + (1 - alpha) * CE. With ``elastic`` (default on), every
step also trains one sub-network cut out of the auxiliary model exactly as stage 2 cuts a target
(``slicing.slice_scalers``: width prefix, layers by relative depth), sampled from the sizes the bank will serve
(the "sandwich": the full model every step plus one sampled size; cf. the width-wise stochastic scaling of the
SWEET follow-up). This is what makes a sliced initialization a working model rather than a fragment.

The same code runs under ``torchrun --nproc_per_node N`` (wave_deploy.training.loop handles DDP); only rank 0 writes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wave_deploy import data as datasets
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
from wave_deploy.wave.teacher import load_teacher, teacher_input

log = logging.getLogger(__name__)


@dataclass
class LearngeneConfig:
    aux_depth: int = 6
    aux_embed_dim: int = 128
    w: int = 32  # template size (= head_dim by default)
    head_dim: int = 32
    patch_size: int = 4
    mlp_ratio: float = 4.0
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


def bank_geometry(config: LearngeneConfig, img_size: int, in_chans: int, num_classes: int) -> BankGeometry:
    return BankGeometry.create(
        n_matrix=config.n_matrix,
        n_vector=config.n_vector,
        img_size=img_size,
        patch_size=config.patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        w=config.w,
        head_dim=config.head_dim,
        mlp_ratio=config.mlp_ratio,
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
    teacher: nn.Module,
    teacher_info: dict[str, Any],
    data,
    config: LearngeneConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    on_step=None,
    device: str = "auto",
) -> tuple[TemplateBank, dict[str, Any]]:
    """Train the auxiliary model and return its bank (with provenance) and a summary of the run."""
    x_tr, y_tr, x_va, y_va = data.train_x, data.train_labels, data.val_x, data.val_labels
    info = data.info
    img_size, in_chans = x_tr.shape[-1], x_tr.shape[1]
    geom = bank_geometry(config, img_size, in_chans, info.num_classes)
    aux_spec = geom.make_spec(config.aux_depth, config.aux_embed_dim)
    bank0 = TemplateBank.init_random(geom, seed=config.seed)
    aux = WaveViT(bank0, aux_spec, train_templates=True, seed=config.seed)
    teacher = teacher_input(teacher, img_size, in_chans)
    student = ElasticStudent(aux, teacher, elastic_sizes(geom, aux_spec), config)
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
    result = train(
        student,
        tcfg,
        x_tr,
        y_tr,
        x_va,
        y_va,
        params=list(aux.parameters()),
        loss_fn=distill_loss_fn,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        on_step=on_step,
    )
    aux.cpu().eval()
    teacher.cpu()
    accuracies = {"teacher": _accuracy(teacher, x_va, y_va), "aux": _accuracy(aux, x_va, y_va)}
    for spec in _probe_sizes(geom, aux_spec):
        accuracies[f"L{spec.depth}_D{spec.embed_dim}_sliced"] = _accuracy(SlicedModel(aux, spec), x_va, y_va)
    provenance = {
        "ancestry": teacher_info,
        "data": info.to_dict(),
        "schedule": {**asdict(config), "steps_run": result.steps},
        "val_accuracy": accuracies,
        "wave_deploy": __version__,
        "torch": torch.__version__,
        "command": portable_command(sys.argv),  # no absolute path of this machine
    }
    bank = aux.export_bank(portable_provenance(provenance))  # data.source etc.: no absolute paths
    return bank, {"accuracies": accuracies, "train": result.to_dict()}


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
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = 100,
    resume: bool = False,
    on_step=None,
    device: str = "auto",
) -> dict[str, Any] | None:
    """``wave-deploy templates build``: load the data and the teacher, run stage 1, write the bank to ``out``.

    The teacher is a timm model by name (``teacher_name``) or a checkpoint (see ``teacher.load_teacher``).
    ``classes`` keeps only those classes (indices or names). Checkpoints go to ``checkpoint_dir``, default
    ``<out without .safetensors>.ckpt``. Returns {"bank", "accuracies", "steps", "train_time_s"} on the main
    process; None on the other ranks of a torchrun launch (only rank 0 writes).
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
    data = datasets.load(data_path, seed=config.seed)
    if classes:
        data = data.select_classes(classes)
    teacher, teacher_info = load_teacher(
        name=teacher_name,
        pretrained=pretrained,
        checkpoint=teacher_checkpoint,
        arch=teacher_arch,
        num_classes=data.info.num_classes,
    )
    bank, summary = build_bank(
        teacher,
        teacher_info,
        data,
        config,
        checkpoint_dir=ckpt_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        on_step=on_step,
        device=device,
    )
    if not distributed.is_main_process():
        return None
    path = bank.save(out)
    return {
        "bank": str(path),
        "accuracies": summary["accuracies"],
        "steps": summary["train"]["steps"],
        "train_time_s": round(summary["train"]["train_time_s"], 1),
    }


def _probe_sizes(geom: BankGeometry, aux_spec: ViTSpec) -> list[ViTSpec]:
    """A few sub-sizes whose sliced accuracy the provenance records (smallest, middle, aux width at half depth)."""
    dims = geom.valid_embed_dims()
    picks = {(1, dims[0]), (max(1, aux_spec.depth // 2), dims[len(dims) // 2]), (aux_spec.depth, dims[0])}
    return [geom.make_spec(d, e) for d, e in sorted(picks) if e <= aux_spec.embed_dim]


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    _, acc = evaluate(model, x, y, batch_size=512, device=torch.device("cpu"))
    return round(acc, 4)
