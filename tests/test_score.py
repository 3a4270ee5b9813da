"""--objective accuracy: each size sliced from the bank, scored on the validation split, cached; the plan picks
the highest score (ties: lower latency) and shows a score for every size that fits."""

from __future__ import annotations

import json

import pytest
import torch
from _banks import mnist_bank_file
from click.testing import CliRunner

from wave_deploy import data as datasets
from wave_deploy.cli.main import cli
from wave_deploy.wave import score
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.init import aux_model
from wave_deploy.wave.slicing import SlicedModel


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    return mnist_bank_file(tmp_path_factory.mktemp("bank"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist():
    return datasets.load_builtin()


def _reference_accuracy(bank, spec, data) -> float:
    """Naive reference: the auxiliary model run through the slice (no folding) on the val split."""
    model = SlicedModel(aux_model(bank), spec).eval()
    with torch.no_grad():
        pred = torch.cat([model(data.val_x[i : i + 250]).argmax(1) for i in range(0, len(data.val_x), 250)])
    return float((pred == data.val_labels).float().mean())


def test_sliced_score_equals_the_sliced_auxiliary_model_and_is_cached(bank_path, mnist, monkeypatch):
    bank = TemplateBank.load(bank_path)
    specs = [bank.geometry.make_spec(d, e) for d in (1, 2) for e in bank.geometry.valid_embed_dims()]
    scores = score.score_sizes(bank_path, specs, mnist)
    assert len(scores) == len(specs) == 4
    for spec in specs:
        assert abs(scores[score._key(spec)] - _reference_accuracy(bank, spec, mnist)) <= 1 / 500
    monkeypatch.setattr(score, "sliced_accuracy", lambda *a, **k: pytest.fail("the cache was not used"))
    assert score.score_sizes(bank_path, specs, mnist) == scores


def test_plan_objective_accuracy_scores_every_fitting_size_and_picks_the_highest(bank_path):
    args = ["plan", "--profile", "raspberry-pi-5", "--templates", str(bank_path), "--objective", "accuracy"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    fitting = plan["fitting"]
    assert len(fitting) == plan["n_feasible"] >= 2
    assert all(isinstance(c["accuracy"], float) and 0.0 <= c["accuracy"] <= 1.0 for c in fitting)
    best = max(c["accuracy"] for c in fitting)
    tied = [c for c in fitting if c["accuracy"] == best]
    assert plan["chosen"]["accuracy"] == best and plan["objective"] == "accuracy"
    assert plan["chosen"]["latency_ms"] == min(c["latency_ms"] for c in tied)  # ties: lower latency
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and "predicted accuracy vs predicted" in text.output


def test_plan_objective_accuracy_on_a_bank_whose_data_is_elsewhere_is_a_usage_error(tmp_path):
    bank = TemplateBank.load(mnist_bank_file(tmp_path))
    bank.provenance["data"]["source"] = str(tmp_path / "gone")
    other = bank.save(tmp_path / "other.safetensors")
    result = CliRunner().invoke(
        cli, ["plan", "--profile", "x86-cpu", "--templates", str(other), "--objective", "accuracy"]
    )
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_build_objective_accuracy_chooses_the_best_sliced_size_and_reports_the_accuracy_frontier(
    bank_path, tmp_path
):
    args = ["build", "--profile", "jetson", "--templates", str(bank_path), "--out", str(tmp_path), "--json"]
    fast = ["--scaler-steps", "1", "--dense-steps", "1", "--batch-size", "32", "--bench-iterations", "2"]
    fast += ["--set", "budgets.min_accuracy_over_chance=null"]  # 1-step models sit at chance by design
    result = CliRunner().invoke(cli, [*args, *fast, "--objective", "accuracy"])
    assert result.exit_code == 0, result.output
    dev = tmp_path / "jetson-orin-nano-8gb"
    report = json.loads((dev / "report.json").read_text())
    sel = report["selection"]
    assert sel["objective"] == "accuracy"
    feasible = [c for c in sel["frontier"] if c["feasible"]]
    assert sel["chosen"]["accuracy"] == max(c["accuracy"] for c in feasible)
    bank = TemplateBank.load(bank_path)
    spec = bank.geometry.make_spec(report["spec"]["depth"], report["spec"]["embed_dim"])
    assert (
        abs(sel["chosen"]["accuracy"] - _reference_accuracy(bank, spec, datasets.load_builtin())) <= 1 / 500
    )
    assert "sliced accuracy vs predicted latency" in (dev / "report.md").read_text()
