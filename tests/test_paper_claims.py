"""benchmarks/paper_claims.py: its command line, and the compute accounting of the matched-compute cells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from _banks import mnist_bank_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import claims_tables
import matched_compute as mc

from wave_deploy import data as datasets
from wave_deploy.spec import flops
from wave_deploy.training.baselines import random_init
from wave_deploy.wave.bank import TemplateBank


def test_help_lists_data_seeds_sizes_and_budget():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "paper_claims.py"), "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for flag in ("--data", "--seeds", "--sizes", "--budget", "--multiples", "--rates"):
        assert flag in out


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    bank = TemplateBank.load(mnist_bank_file(tmp_path_factory.mktemp("bank")))
    teacher_spec = bank.aux_spec
    return SimpleNamespace(
        bank=bank, recipe=mc.Recipe(batch=16), budget=2, new_task=False, data=datasets.load_builtin(),
        ancestry=random_init(teacher_spec, 3).state_dict(), ancestry_spec=teacher_spec,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kind, arg", [("random", 1e-3), ("ws", 5e-4), ("wave", "dense"), ("wave", "distill")]
)
def test_every_method_gets_the_same_training_flops_and_wave_never_more(ctx, kind, arg):
    spec = ctx.bank.geometry.make_spec(1, 16)
    row = mc.cell(kind, arg, spec, 15, 0, ctx)
    unit = 3 * flops(spec, 1) * 16  # forward + backward of one batch of 16
    target = 15 * 2 * unit
    assert row["flops"] <= target and target - row["flops"] < unit + 1e-9 * target
    if arg == "distill":  # a distilled scaler step also pays the auxiliary model's forward
        per = unit + flops(ctx.bank.aux_spec, 1) * 16
        assert row["scaler_steps"] >= 1
        assert row["flops"] == row["scaler_steps"] * per + row["dense_steps"] * unit
    assert 0.0 <= row["acc"] <= 1.0


def test_bank_cost_counts_ancestry_and_stage1_steps_from_provenance(ctx):
    bank = ctx.bank
    spec = bank.aux_spec
    bank.provenance["ancestry"] = {"spec": spec.to_dict(), "steps": 7}
    bank.provenance["schedule"] = {"batch_size": 4, "steps_run": 5}
    cost = mc.bank_cost(bank)
    assert cost["ancestry_flops"] == 7 * 3 * flops(spec, 1) * 4
    sizes = [bank.geometry.make_spec(d, e) for d in (1, 2) for e in (16, 32) if (d, e) != (2, 32)]
    mean_sub = sum(flops(s, 1) for s in sizes) / len(sizes)
    assert cost["stage1_flops"] == int(5 * 4 * (flops(spec, 1) + 3 * flops(spec, 1) + 3 * mean_sub))
    assert cost["sizes_served"] == 4


def test_seed_zero_choice_is_reused_for_the_other_seeds():
    rows = [
        {"kind": "random", "arg": 1e-3, "size": "L1 D16", "m": 1, "seed": 0, "acc": 0.5},
        {"kind": "random", "arg": 2e-3, "size": "L1 D16", "m": 1, "seed": 0, "acc": 0.6},
        {"kind": "random", "arg": 2e-3, "size": "L1 D16", "m": 1, "seed": 1, "acc": 0.4},
        {"kind": "random", "arg": 1e-3, "size": "L1 D16", "m": 1, "seed": 1, "acc": 0.9},
    ]
    arg, picked = claims_tables._cells(rows, "random", "L1 D16", 1, 0)
    assert arg == 2e-3 and [r["acc"] for r in picked] == [0.6, 0.4]


def test_weight_selection_cells_of_another_ancestry_are_neither_reused_nor_tabled():
    def ws(acc, sha):
        row = {"kind": "ws", "arg": 5e-4, "size": "L2 D64", "m": 1, "seed": 0, "acc": acc, "flops": 1e12,
               "wall_s": 1.0, "scaler_steps": 0, "dense_steps": 20}  # fmt: skip
        return row if sha is None else {**row, "ancestry_sha256": sha}

    meta = {"kind": "meta", "data": "mnist_5k", "budget": 20, "batch": 128}
    rows = [
        meta,
        ws(0.5, None),
        {**meta, "ancestry_sha256": "b" * 16, "ancestry_acc": 0.93},
        ws(0.8, "b" * 16),
    ]
    kept = claims_tables.for_ancestry(rows, "b" * 16)
    assert [r["acc"] for r in kept if r["kind"] == "ws"] == [0.8]
    assert claims_tables.for_ancestry(rows, "c" * 16) == []  # nothing of ancestry c: every ws cell runs again
    table = claims_tables.render(rows, [0])
    assert "80.0% (n=1)" in table and "50.0%" not in table and "val accuracy 93.0%" in table
