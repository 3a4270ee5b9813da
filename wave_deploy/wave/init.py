"""Stage 2 of WAVE (DESIGN 3.3): initialize a target size from a bank, train its scalers, expand.

A target (L, D) owns its own scalers. Two ways to start them:

- ``aux`` (default): *slice* the bank's auxiliary scalers. Width: the first D/w tiles of every embed-width
  axis, the first H/w of every mlp axis, and the first D/w tiles of each of q, k and v (whole heads, since
  w = head_dim). Depth: layer i of L comes from aux layer floor(i * L_aux / L), i.e. by relative depth.
  Stage 1 trains the auxiliary model on exactly these slices (learngene.py, through slicing.py), so every
  slice is itself a
  working model before any stage-2 step.
  A target deeper or wider than the auxiliary model grows its scalers instead (wave.slicing.grow_scalers:
  repeated layers start as the identity, new tiles are zero or random so the function is kept where it can
  be). A target image size other than the bank's resamples the pos_embed templates (wave.model).
- ``random``: Gaussian scalers scaled so the expansion matches timm's init (WaveViT.init_scalers_random).

Then only the scalers train (templates frozen), distilled from the bank's full auxiliary model when the task
is the bank's own, with labels otherwise; then the expanded model is folded and trained densely.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wave_deploy import data as datasets
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import check_writable_dir, remove_stale_parts, write_json
from wave_deploy.options import BuildOptions, InitOptions
from wave_deploy.spec import ViTSpec
from wave_deploy.training.folding import check_fold, fold, load_folded, save_folded
from wave_deploy.training.loop import TrainConfig, distill_loss_fn, distillation_loss, evaluate, train
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.model import WaveViT
from wave_deploy.wave.provenance import portable_path
from wave_deploy.wave.slicing import grow_scalers

log = logging.getLogger(__name__)

INIT_STRATEGIES = ("aux", "random")


def aux_model(bank: TemplateBank, img_size: int | None = None) -> WaveViT:
    """The bank's full auxiliary model (templates + aux scalers), frozen, in eval mode; at ``img_size``
    (default: the bank's) with its position embedding resampled."""
    if bank.aux_spec is None or not bank.aux_scalers:
        raise InvalidInputError(
            "the template bank holds no auxiliary scalers; rebuild it with `templates build`"
        )
    spec = bank.aux_spec if img_size is None else dataclasses.replace(bank.aux_spec, img_size=img_size)
    model = WaveViT(bank, spec)
    model.load_scalers(bank.aux_scalers)
    model.requires_grad_(False)
    return model.eval()


def frozen_teacher(bank: TemplateBank, img_size: int | None = None) -> nn.Module:
    """The auxiliary model folded once into a plain timm VisionTransformer (frozen, eval): the same function
    as ``aux_model`` (fold parity) without re-expanding its weights at every distillation step."""
    model = load_folded(*fold(aux_model(bank, img_size)))
    return model.requires_grad_(False).eval()


def is_bank_task(bank: TemplateBank, class_names) -> bool:
    """True when data with these class names is the task the bank was built on (its head and aux model apply)."""
    built_on = bank.provenance.get("data", {}).get("class_names")
    if len(class_names) != bank.geometry.num_classes:
        return False
    return built_on is None or list(built_on) == list(class_names)


def init_wave_model(
    bank: TemplateBank, spec: ViTSpec, strategy: str = "aux", seed: int = 0, same_task: bool | None = None
) -> WaveViT:
    """A WaveViT of ``spec`` with scalers started by ``strategy`` (see the module docstring).

    ``same_task``: the data is the bank's own task, so the templated head (and its scalers) carry over; a new
    task gets a fresh dense head. Default: decided by the class count.
    """
    if strategy not in INIT_STRATEGIES:
        raise InvalidInputError(
            f"unknown init strategy {strategy!r}; choose one of {', '.join(INIT_STRATEGIES)}"
        )
    bank.geometry.check_spec(spec)
    # random scalers (and a fresh head for a new task)
    model = WaveViT(bank, spec, seed=seed, templated_head=same_task)
    if strategy == "aux":
        src = aux_model(bank)
        if spec.depth > src.spec.depth or spec.embed_dim > src.spec.embed_dim:
            log.info(
                "target %s is beyond the auxiliary model %s: growing its scalers", spec.name, src.spec.name
            )
        grown = grow_scalers(
            src.scalers_dict(),
            src.spec,
            spec,
            bank.geometry.w,
            model.scalers_dict(),
            with_head=model.templated_head,
        )
        model.load_scalers(grown)
    return model


class Distiller(nn.Module):
    """``forward(x)`` -> student logits; ``forward(x, y)`` -> KL(teacher || student) tau^2 * alpha + CE * (1-alpha).

    Training loops call it through ``loss_fn = lambda m, x, y: m(x, y)`` so DDP sees one forward call.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, tau: float = 2.0, alpha: float = 0.5):
        super().__init__()
        self.student, self.tau, self.alpha = student, tau, alpha
        self.teacher = teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        logits = self.student(x)
        if y is None:
            return logits
        with torch.no_grad():
            t_logits = self.teacher(x)
        return distillation_loss(logits, t_logits, y, tau=self.tau, alpha=self.alpha)


@dataclass
class ScalerPhase:
    steps: int = 100
    batch_size: int = 128
    lr: float = 3e-3
    tau: float = 2.0
    alpha: float = 0.5  # weight of the distillation term (1 - alpha on labels)
    seed: int = 0
    compile: bool = False  # torch.compile the training step (an execution choice, like the device)

    def config(self, device: str = "auto") -> TrainConfig:
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=0.0,
            warmup_steps=min(10, self.steps // 10),
            seed=self.seed,
            checkpoint_every=50,
            device=device,
            compile=self.compile,
        )


def train_scalers(
    model: WaveViT, bank: TemplateBank, data, phase: ScalerPhase, device: str = "auto", **train_kwargs
):
    """Train only ``model``'s scalers (templates are buffers); distil from the aux model on the bank's task."""
    if phase.steps == 0:
        return None
    config = phase.config(device)
    same_task = model.templated_head and bank.aux_spec is not None
    if same_task:
        runner = Distiller(model, frozen_teacher(bank, model.spec.img_size), tau=phase.tau, alpha=phase.alpha)
        return train(
            runner,
            config,
            *_tensors(data),
            params=list(model.parameters()),
            loss_fn=distill_loss_fn,
            **train_kwargs,
        )
    return train(model, config, *_tensors(data), **train_kwargs)


def _tensors(data) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train_x, train_y, val_x, val_y) of a wave_deploy.data.Dataset."""
    return data.train_x, data.train_labels, data.val_x, data.val_labels


@dataclass
class DensePhase:
    steps: int = 0
    batch_size: int = 128
    lr: float = 5e-4
    warmup_steps: int = 20
    label_smoothing: float = 0.1
    seed: int = 0
    compile: bool = False  # torch.compile the training step (an execution choice, like the device)

    def config(self, device: str = "auto") -> TrainConfig:
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            label_smoothing=self.label_smoothing,
            seed=self.seed,
            device=device,
            min_lr_ratio=0.01,
            checkpoint_every=50,
            compile=self.compile,
        )


def initialize(
    bank: TemplateBank,
    spec: ViTSpec,
    data,
    *,
    strategy: str = "aux",
    scaler: ScalerPhase | None = None,
    dense: DensePhase | None = None,
    on_step=None,
    device: str = "auto",
    checkpoint_dir=None,
):
    """Stage 2 end to end: init scalers, train them, fold into timm, optionally train densely.

    Returns (timm VisionTransformer, record) where record holds the spec, steps, losses, val accuracies and
    timings of each phase. With ``checkpoint_dir`` both phases checkpoint there and resume from it, so a killed
    run continues exactly where it stopped (the checkpoints refuse a different configuration or data).
    """
    scaler = scaler or ScalerPhase()
    dense = dense or DensePhase()
    t0 = time.perf_counter()
    same_task = is_bank_task(bank, data.info.class_names)
    wave = init_wave_model(bank, spec, strategy, seed=scaler.seed, same_task=same_task)
    _, acc0 = evaluate(wave, data.val_x, data.val_labels, 512, torch.device("cpu"))
    record: dict = {
        "spec": spec.to_dict(),
        "strategy": strategy,
        "same_task_as_bank": same_task,
        "scaler_count": wave.scaler_count(),
        "val_acc_at_init": acc0,
        "init_s": round(time.perf_counter() - t0, 3),
    }
    ckpt: dict[str, Path | None] = {"scalers": None, "dense": None}
    if checkpoint_dir is not None:
        ckpt = {phase: Path(checkpoint_dir) / phase for phase in ckpt}
    result = None  # of the phase just run
    if scaler.steps:
        result = train_scalers(
            wave,
            bank,
            data,
            scaler,
            on_step=on_step,
            device=device,
            checkpoint_dir=ckpt["scalers"],
            resume=checkpoint_dir is not None,
        )
    record["scaler_phase"] = phase_record(result)
    state, spec = fold(wave.cpu())
    model = load_folded(state, spec)
    record["fold_parity_max_abs_err"] = check_fold(wave, model, data.val_x[:8].float())
    result = None
    if dense.steps:
        result = train(
            model,
            dense.config(device),
            *_tensors(data),
            on_step=on_step,
            checkpoint_dir=ckpt["dense"],
            resume=checkpoint_dir is not None,
        )
        model = model.cpu().eval()
    record["dense_phase"] = phase_record(result)
    _, record["val_acc"] = evaluate(model, data.val_x, data.val_labels, 512, torch.device("cpu"))
    record["total_s"] = round(time.perf_counter() - t0, 3)
    return model, record


def phases(
    options: BuildOptions | InitOptions, scaler_steps: int, dense_steps: int
) -> tuple[ScalerPhase, DensePhase]:
    """The two training phases of stage 2 as a job's options ask for them (init and build alike)."""
    b, seed, comp = options.batch_size, options.seed, options.compile
    return (
        ScalerPhase(steps=scaler_steps, batch_size=b, seed=seed, compile=comp),
        DensePhase(steps=dense_steps, batch_size=b, seed=seed, compile=comp),
    )


def init_model(out: str | Path, options: InitOptions, on_step: Callable | None = None) -> dict[str, Any]:
    """``wave-deploy init``: stage 2 for one size, written to ``out``/model.safetensors and ``out``/init.json.

    Loads the bank (default: the shipped one) and the data (default: the built-in MNIST-5k; with
    ``options.img_size`` resized to it at load, and the model made for that image size), runs ``initialize``
    and writes the folded timm checkpoint (spec in its metadata) and the record, which it returns. Bad sizes or
    data raise InvalidInputError/UsageError before anything is written.
    """
    check_writable_dir(out, "--out")  # before any work: exit 3 naming the path
    remove_stale_parts(out)  # temporary files of a killed earlier run
    bank_file = Path(options.templates) if options.templates is not None else default_bank_path()
    bank = TemplateBank.load(bank_file)
    geom = bank.geometry
    size = geom.target_img_size(options.img_size)
    geom.make_spec(options.depth, options.embed_dim, options.heads, img_size=size)  # fails before the data
    data = datasets.load_for_bank(
        options.data,
        in_chans=geom.in_chans,
        img_size=size,
        seed=options.seed,
        resize=options.img_size is not None,
    )
    spec = geom.make_spec(
        options.depth, options.embed_dim, options.heads, num_classes=data.info.num_classes, img_size=size
    )
    scaler, dense = phases(options, options.scaler_steps, options.dense_steps)
    model, record = initialize(
        bank, spec, data, strategy=options.strategy, scaler=scaler, dense=dense, on_step=on_step,
        device=options.device,
    )  # fmt: skip
    out_dir = Path(out)
    record["bank"] = portable_path(bank_file)
    record["data"] = data.info.to_dict()
    save_folded(
        out_dir / "model.safetensors", model.state_dict(), spec, {"init": {"strategy": options.strategy}}
    )
    write_json(out_dir / "init.json", record)
    return record


def phase_record(result) -> dict | None:
    if result is None:
        return None
    return {
        "steps": result.steps,
        "train_time_s": round(result.train_time_s, 3),
        "images_per_s": round(result.images_per_s, 1),
        "device": result.device,
        "amp": result.amp,
        "data_placement": result.data_placement,
        "compiled": result.compiled,
        "final_val_acc": result.final_val_acc,
        "curve": [{"step": r.step, "train_loss": r.train_loss, "val_acc": r.val_acc} for r in result.history],
    }
