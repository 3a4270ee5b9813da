"""benchmarks/stage2_recipe.py: its recipes cost what they say, and its table reports what the rows hold."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import stage2_recipe as s2

from wave_deploy.spec import flops
from wave_deploy.wave.bank import TemplateBank, default_bank_path


def test_same_flops_recipes_cost_what_the_default_costs_within_one_dense_step():
    bank = TemplateBank.load(default_bank_path())
    for depth, width in ((2, 64), (4, 96), (6, 128)):
        spec = bank.geometry.make_spec(depth, width)
        steps = s2.same_flops_dense_steps(spec, bank.aux_spec)
        default = s2.train_flops(spec, bank.aux_spec, 60, 150)
        same = s2.train_flops(spec, bank.aux_spec, 0, steps)
        one_step = s2.BATCH * 3 * flops(spec)
        assert abs(same - default) <= one_step / 2, (depth, width)
    # a distilled step of L2 D64 pays the 6 x 128 teacher's forward: 4.8 dense steps
    assert s2.same_flops_dense_steps(bank.geometry.make_spec(2, 64), bank.aux_spec) == 439


def test_table_gives_mean_std_and_the_paired_difference_to_the_default(capsys):
    names = list(s2.RECIPES)
    rows = [
        {"size": "L2 D64", "recipe": name, "seed": seed, "acc": acc, "acc_at_init": 0.8, "tflop": 0.6}
        for name, accs in ((names[0], (0.90, 0.92)), (names[1], (0.88, 0.91)))
        for seed, acc in enumerate(accs)
    ]
    s2.table(rows)
    out = capsys.readouterr().out
    assert "| L2 D64 | 80.0% | 0.6 | 91.0% ± 1.4% (n=2) | 89.5% ± 2.1% (n=2) | - | - | - |" in out
    assert f"- {names[1]}: -1.50 ± 0.71 pt (n=2)" in out
