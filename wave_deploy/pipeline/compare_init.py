"""``build --compare-init``: every usable initialization trained for the same FLOPs on the build's data.

The budget is the build's schedule as dense training: (scaler steps + dense steps) x a dense step of the
chosen size (``training.compute``: 3 x forward x batch). WAVE spends it on its scaler phase (a distilled
step also pays the teacher's forward) and dense steps; weight selection and random init spend it on dense
steps. Every init runs ``compare_seeds`` seeds (--seed, --seed + 1, ...); the deployed model is the one of
highest mean validation accuracy, ties to fewer training FLOPs, then to the init that needs less (random,
then weight selection, then WAVE), trained with the first seed.

Before training, a few real dense steps are timed and the estimate of the whole comparison is passed to
``on_note`` (the CLI prints it, with what it leaves out: ``ESTIMATE_SCOPE``). Each finished run is kept under the train stage's cache folder, so a killed
comparison resumes with the runs it has not finished; the record (``init_comparison`` in train.json, then the
report's ``init_comparison`` section: docs/report-schema.md) holds the table.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wave_deploy import probe
from wave_deploy.fileio import write_json
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.inits import INITS, SIMPLICITY, Sources, applicable, run_init
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init
from wave_deploy.training.compute import dense_step_flops
from wave_deploy.training.folding import load_folded_file, save_folded

log = logging.getLogger(__name__)

RULE = "highest mean validation accuracy; ties to fewer training FLOPs, then random < weight-selection < wave"
TIMED_STEPS, TIMED_BATCH = 2, 32  # the estimate: 2 timed dense steps (after one untimed) at batch <= 32
# What the estimate leaves out, printed with it: it times fp32 eager dense steps (no autocast, no
# torch.compile), prices WAVE's teacher forwards at the dense step's rate (they are part of the FLOPs budget),
# and adds nothing for the validation passes each run makes.
ESTIMATE_SCOPE = (
    "fp32 dense steps without autocast, teacher forwards priced as dense-step FLOPs, "
    "evaluation passes not included"
)


def budget_flops(spec: ViTSpec, options: BuildOptions, n_train: int) -> int:
    """The training FLOPs every initialization gets: the build's scaler + dense steps as dense steps."""
    scaler_steps, dense_steps = options.phase_steps(n_train)
    return (scaler_steps + dense_steps) * dense_step_flops(spec, options.batch_size)


def seconds_per_dense_step(spec: ViTSpec, data, options: BuildOptions) -> float:
    """One dense step of ``spec`` at the build's batch on the build's device, from TIMED_STEPS real steps at
    a batch of at most TIMED_BATCH images (scaled by the batch: an estimate)."""

    cuda = options.device == "cuda" or (options.device == "auto" and probe.cuda_available())
    device = torch.device("cuda" if cuda else "cpu")
    model = random_init(spec, options.seed).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = min(TIMED_BATCH, options.batch_size, len(data.train_x))
    x, y = data.train_x[:b].to(device), data.train_labels[:b].to(device)
    times = []
    for _ in range(TIMED_STEPS + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * options.batch_size / b


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def compare(
    sources: Sources, spec: ViTSpec, data, options: BuildOptions, cache: Path, *, on_step=None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train every usable init of ``spec`` on ``data`` for one FLOPs budget; return the deployed model and
    its train record, whose ``init_comparison`` holds the table."""

    flops = budget_flops(spec, options, len(data.train_x))
    seeds = [options.seed + k for k in range(options.compare_seeds)]
    reasons = {init: applicable(init, sources, spec) for init in INITS}
    runnable = [init for init in INITS if reasons[init] is None]
    step_s = seconds_per_dense_step(spec, data, options)
    runs = len(runnable) * len(seeds)
    estimate = runs * flops / dense_step_flops(spec, options.batch_size) * step_s
    skipped = "".join(f"; skipped {i}: {reasons[i]}" for i in INITS if reasons[i] is not None)
    note = (f"compare-init: {', '.join(runnable)} x {len(seeds)} seeds, {flops / 1e12:.3g} TFLOP each "
            f"({runs * flops / 1e12:.3g} TFLOP in all), estimated {_clock(estimate)} ({ESTIMATE_SCOPE}){skipped}")  # fmt: skip
    log.info("%s", note)
    if on_note is not None:
        on_note(note)
    t0 = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {}
    for init in runnable:
        for seed in seeds:
            records.setdefault(init, []).append(_run(init, seed, seeds[0], sources, spec, data, options,
                                                     flops, cache, on_step))  # fmt: skip
    rows = [_row(init, records.get(init, []), reasons[init]) for init in INITS]
    trained = [r for r in rows if r["status"] == "trained"]
    best = min(trained, key=lambda r: (-r["val_acc_mean"], r["training_flops"], SIMPLICITY[r["init"]]))
    model, _, _ = load_folded_file(cache / f"{best['init']}-seed{seeds[0]}.safetensors")
    record = dict(records[best["init"]][0])
    record["init_comparison"] = {
        "budget_flops": flops, "seeds": seeds, "batch_size": options.batch_size,
        "schedule_steps": sum(options.phase_steps(len(data.train_x))), "chosen": best["init"], "rule": RULE,
        "estimate_s": round(estimate, 1), "wall_s": round(time.perf_counter() - t0, 1), "rows": rows,
    }  # fmt: skip
    return model, record


def _run(
    init: str, seed: int, first: int, sources: Sources, spec: ViTSpec, data, options: BuildOptions,
    flops: int, cache: Path, on_step,
) -> dict[str, Any]:  # fmt: skip
    """One (init, seed) run, or its record from an earlier, interrupted comparison."""

    name = f"{init}-seed{seed}"
    done, weights = cache / f"{name}.json", cache / f"{name}.safetensors"
    if done.is_file() and (seed != first or weights.is_file()):
        log.info("compare-init: reusing the finished run %s", name)
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    model, record = run_init(init, sources, spec, data, options, seed=seed, budget_flops=flops,
                             on_step=on_step, checkpoint_dir=cache / name)  # fmt: skip
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    if seed == first:  # the model a comparison may deploy
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_folded(weights, state, spec, {"init": init, "seed": seed})
    write_json(done, record)  # last: its presence marks the run finished
    return record


def _row(init: str, records: list[dict[str, Any]], reason: str | None) -> dict[str, Any]:
    """One init's line of the table: accuracy mean and spread over seeds, FLOPs, wall time, seeds."""
    if not records:
        return {"init": init, "status": "skipped", "reason": reason, "seeds": [], "val_accs": [],
                "val_acc_mean": None, "val_acc_std": None, "val_acc_min": None, "val_acc_max": None,
                "val_acc_at_init_mean": None, "training_flops": None, "scaler_steps": None,
                "dense_steps": None, "wall_s_mean": None}  # fmt: skip
    accs = [float(r["val_acc"]) for r in records]
    first = records[0]
    return {
        "init": init, "status": "trained", "reason": None, "seeds": [r["seed"] for r in records],
        "val_accs": accs, "val_acc_mean": statistics.mean(accs),
        "val_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "val_acc_min": min(accs), "val_acc_max": max(accs),
        "val_acc_at_init_mean": statistics.mean(float(r["val_acc_at_init"]) for r in records),
        "training_flops": int(first["training_flops"]),
        "scaler_steps": (first.get("scaler_phase") or {}).get("steps", 0),
        "dense_steps": (first.get("dense_phase") or {}).get("steps", 0),
        "wall_s_mean": round(statistics.mean(float(r["wall_s"]) for r in records), 2),
    }  # fmt: skip
