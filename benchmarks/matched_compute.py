"""Cells of the matched-compute benchmark (used by paper_claims.py): one method, one size, one compute level,
one seed -> accuracy, training FLOPs and wall time.

Compute unit: a *dense step* of the target size, 3 x its forward FLOPs (forward + backward) x the batch
(spec.flops, analytic). The budget B is given in dense steps; a compute level m gives every method m x B dense
steps' worth of FLOPs:
- random init and weight selection: m x B dense steps;
- WAVE: a scaler phase of k steps, each 3 x forward of the target (+ the bank's auxiliary-model forward when
  it distils), then the rest of the FLOPs as dense steps (templates' expansion, < 1% here, is not counted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init, weight_selection
from wave_deploy.training.compute import dense_step_flops, forward_flops, scaler_step_flops
from wave_deploy.training.loop import TrainConfig, distill_loss_fn, evaluate, train
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.init import Distiller, aux_model, init_wave_model, is_bank_task
from wave_deploy.wave.model import WaveViT
from wave_deploy.wave.stage1.learngene import elastic_sizes

# WAVE stage-2 recipes compared (the ablation); "dense" is the default recipe (see docs/benchmarks.md)
WAVE_RECIPES = {  # name: (scaler phase: None | "distil" | "labels", its share of the FLOPs, dense lr or None)
    "distill": (
        "distil",
        0.2,
        None,
    ),  # scaler phase distilled from the bank's auxiliary model, 20% of the FLOPs
    "labels": ("labels", 0.2, None),  # scaler phase on labels (no teacher forward), 20% of the FLOPs
    "dense": (None, 0.0, None),  # no scaler phase: the sliced model trains densely from the first step
    "dense-lr1e-4": (None, 0.0, 1e-4),  # the same at a rate for an already-trained start
    "distill-lr1e-4": ("distil", 0.2, 1e-4),
}


@dataclass(frozen=True)
class Recipe:
    batch: int = 128
    lr: float = 5e-4  # dense phase of WAVE and weight selection; random init sweeps its own
    scaler_lr: float = 3e-3


# The accounting is the library's (build --compare-init counts the same way): wave_deploy.training.compute
fwd = forward_flops


def dense_train(model, data, steps: int, lr: float, seed: int, batch: int):
    config = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=max(1, steps // 10),
        min_lr_ratio=0.01,
        label_smoothing=0.1,
        seed=seed,
        eval_every=steps,
        device="cpu",
    )
    return train(model, config, data.train_x, data.train_labels, data.val_x, data.val_labels)


def val_acc(model, data) -> float:
    return evaluate(model.cpu().eval(), data.val_x, data.val_labels, 512, torch.device("cpu"))[1]


def cell(kind: str, arg, spec: ViTSpec, m: int, seed: int, ctx) -> dict:
    """Run one cell. kind: random (arg = lr) | ws (arg = lr) | wave (arg = recipe name). ctx: Context."""
    recipe, data, budget = ctx.recipe, ctx.data, ctx.budget
    unit = dense_step_flops(spec, recipe.batch)
    target = m * budget * unit
    t0 = time.perf_counter()
    out = {"kind": kind, "arg": arg, "size": f"L{spec.depth} D{spec.embed_dim}", "m": m, "seed": seed}
    if kind == "random":
        model = random_init(spec, seed)
        dense_train(model, data, m * budget, float(arg), seed, recipe.batch)
        out.update(scaler_steps=0, dense_steps=m * budget, flops=target)
    elif kind == "ws":
        model = weight_selection(ctx.ancestry, ctx.ancestry_spec, spec, seed=seed, new_task=ctx.new_task)
        dense_train(model, data, m * budget, float(arg), seed, recipe.batch)
        out.update(scaler_steps=0, dense_steps=m * budget, flops=target)
    else:
        model, out_steps = wave_stage2(spec, str(arg), target, seed, ctx)
        out.update(out_steps)
    out["acc"] = val_acc(model, data)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def wave_stage2(spec: ViTSpec, name: str, target: int, seed: int, ctx):
    """WAVE at ``target`` training FLOPs: slice, optional scaler phase, fold, dense steps with what is left."""
    from wave_deploy.training.folding import fold, load_folded

    bank: TemplateBank = ctx.bank
    recipe = ctx.recipe
    mode, share, dense_lr = WAVE_RECIPES[name]
    same_task = not ctx.new_task
    if mode == "distil" and not same_task:
        mode = "labels"  # a new task has no teacher for its classes
    wave = init_wave_model(bank, spec, "aux", seed=seed, same_task=same_task)
    out = {"acc_at_init": val_acc(wave, ctx.data)}
    wave.train()
    per_scaler = scaler_step_flops(spec, recipe.batch, bank.aux_spec if mode == "distil" else None)
    k = min(round(share * target / per_scaler), int(target // per_scaler)) if mode else 0
    if k:
        config = TrainConfig(
            steps=k,
            batch_size=recipe.batch,
            lr=recipe.scaler_lr,
            weight_decay=0.0,
            warmup_steps=min(10, k // 10),
            seed=seed,
            eval_every=k,
            device="cpu",
        )
        d = ctx.data
        if mode == "distil":
            runner = Distiller(wave, aux_model(bank))
            train(runner, config, d.train_x, d.train_labels, d.val_x, d.val_labels,
                  params=list(wave.parameters()), loss_fn=distill_loss_fn)  # fmt: skip
        else:
            train(wave, config, d.train_x, d.train_labels, d.val_x, d.val_labels)
    state, folded_spec = fold(wave.cpu())
    model = load_folded(state, folded_spec)
    rest = target - k * per_scaler
    dense_steps = max(0, int(rest // dense_step_flops(spec, recipe.batch)))
    if dense_steps:
        dense_train(model, ctx.data, dense_steps, dense_lr or recipe.lr, seed, recipe.batch)
    used = k * per_scaler + dense_steps * dense_step_flops(spec, recipe.batch)
    out.update(scaler_steps=k, dense_steps=dense_steps, flops=used)
    return model, out


def bank_cost(bank: TemplateBank) -> dict:
    """One-time training FLOPs of the bank from its provenance: ancestry steps + elastic stage-1 steps.

    A stage-1 step: the ancestry's forward (teacher), the full auxiliary model's forward + backward, and one
    sampled size's forward + backward (the mean over the sizes stage 1 samples). All at the schedule's batch.
    """
    prov = bank.provenance
    anc = prov.get("ancestry", {})
    sched = prov.get("schedule", {})
    batch = int(sched.get("batch_size", 128))
    anc_spec = ViTSpec(**anc["spec"]) if "spec" in anc else bank.aux_spec
    anc_steps = int(anc.get("steps", 0))
    stage1_steps = int(sched.get("steps_run") or 0)
    sizes = elastic_sizes(bank.geometry, bank.aux_spec)
    mean_sub = sum(fwd(s) for s in sizes) / max(1, len(sizes))
    per_stage1 = (fwd(anc_spec) + 3 * fwd(bank.aux_spec) + 3 * mean_sub) * batch
    return {
        "ancestry_steps": anc_steps,
        "ancestry_flops": anc_steps * 3 * fwd(anc_spec) * batch,
        "stage1_steps": stage1_steps,
        "stage1_flops": int(stage1_steps * per_stage1),
        "sizes_served": len(sizes) + 1,  # + the auxiliary model's own size
    }


def count_params(model: WaveViT | torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def new_task_for(bank: TemplateBank, class_names) -> bool:
    return not is_bank_task(bank, class_names)
