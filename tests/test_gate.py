"""The release gate fails closed: a failed run never leaves a PASS at a final path (usage errors included; the
earlier models move to stale/), a merged device failure survives rebuilds, every verdict is judged again from
its evidence and every file it rests on re-hashed on every read (an edited artifacts directory is exit 3),
every profile of a multi-profile build is built, --json prints one object on every exit, a device report of
another model (or an invalid one) is refused, and a wrong fold never becomes a checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from _banks import mnist_bank_file
from _report_data import make_device_report, write_build, write_device
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import (
    EXIT_BUDGET_BROKEN,
    EXIT_INVALID_INPUT,
    EXIT_NO_FEASIBLE_MODEL,
    EXIT_PARITY_FAILED,
    InvalidInputError,
)
from wave_deploy.profiles import load_profile
from wave_deploy.reports import load_report
from wave_deploy.reports.merge import kept_device_report, merge_device_report

TINY_TRAINING = ["--scaler-steps", "2", "--dense-steps", "2", "--batch-size", "32", "--bench-iterations", "5"]
# Two steps leave these models at chance: the chance floor is off here, and tested on its own below.
FAST = [*TINY_TRAINING, "--set", "budgets.min_accuracy_over_chance=null"]
JETSON = "jetson-orin-nano-8gb"


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> Path:
    return mnist_bank_file(tmp_path_factory.mktemp("bank"))


@pytest.fixture(scope="module")
def built(bank_path, tmp_path_factory) -> Path:
    """One passing jetson build; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("built")
    result = _build(bank_path, out)
    assert result.exit_code == 0, result.output
    return out


def _build(bank_path, out, *extra, profiles=("jetson",)):
    args = ["build", "--templates", str(bank_path), "--out", str(out), "--json", *FAST, *extra]
    for p in profiles:
        args += ["--profile", p]
    return CliRunner().invoke(cli, args)


def _one_json(result) -> dict:
    """stdout holds exactly one JSON object."""
    obj, end = json.JSONDecoder().raw_decode(result.stdout)
    assert result.stdout[end:].strip() == "", "more than one object on stdout"
    return obj


def _copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    return out


def _over_budget_device_report(dev: Path, path: Path) -> Path:
    """A passing on-device run of this build's own model, 1.5x over the latency budget."""
    report = load_report(dev)
    plan = json.loads((dev / "bundle" / "plan.json").read_text())
    precision = report["profile"]["precision"]
    model_file = plan["models"][precision if precision in plan["models"] else "fp32"]  # as the kit picks
    budget = report["budgets"]["latency"]["budget_ms"]
    device = make_device_report(report, 1.5 * budget, model_file=model_file,
                                model_sha256=plan["sha256"][model_file])  # fmt: skip
    return write_device(path, device)


def test_a_rebuild_keeps_a_merged_device_failure_and_exits_8(bank_path, built, tmp_path):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    merged = CliRunner().invoke(cli, ["report", str(dev), "--device-report",
                                      str(_over_budget_device_report(dev, tmp_path / "d.json"))])  # fmt: skip
    assert merged.exit_code == 0, merged.output
    assert load_report(dev)["verdict"] == "fail"
    again = _build(bank_path, out)
    assert again.exit_code == EXIT_BUDGET_BROKEN, again.output
    report = load_report(dev)
    assert report["verdict"] == "fail" and report["failed_budgets"] == ["latency"]
    assert report["budgets"]["latency"]["source"] == "measured on device"
    assert report["measured"]["device"]["latency"]["p99_ms"] == report["budgets"]["latency"]["value_ms"]
    summary = _one_json(again)
    assert summary["exit_code"] == EXIT_BUDGET_BROKEN and summary["devices"][0]["verdict"] == "fail"
    stages = {s["name"]: s["reused"] for s in summary["devices"][0]["stages"]}
    assert stages["train"] and stages["export"] and not stages["report"]  # only the report was redone


@pytest.mark.parametrize(
    "extra, code", [(["--set", "budgets.latency_ms=-1"], EXIT_INVALID_INPUT), (["--no-such-option"], 2)]
)
def test_a_merged_device_failure_survives_a_failed_run_and_the_next_build_exits_8(
    bank_path, built, tmp_path, extra, code
):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    assert _merge(dev, _over_budget_device_report(dev, tmp_path / "d.json")).exit_code == 0
    kept = kept_device_report(dev).read_bytes()
    assert _build(bank_path, out, *extra).exit_code == code  # a failure report replaces the merged one
    manifest = json.loads((dev / "manifest.json").read_text())
    recorded = {rel for stage in manifest["stages"] for rel in stage["outputs"]}
    assert "device/device_report.json" in recorded  # the failure report keeps the record of the merge
    again = _build(bank_path, out)
    assert again.exit_code == EXIT_BUDGET_BROKEN, again.output  # the measured FAIL stays: not 3, never 0
    report = load_report(dev)
    assert report["failed_budgets"] == ["latency"] and report["budgets"]["latency"]["evidence"] == "device"
    assert kept_device_report(dev).read_bytes() == kept
    _no_pass_anywhere(out)


def test_a_failure_report_drops_the_record_of_a_kept_device_report_edited_since(tmp_path):
    from wave_deploy.pipeline.failclosed import neutralize
    from wave_deploy.pipeline.manifest import read_manifest
    from wave_deploy.reports.files import failure_of

    dev, report = write_build(tmp_path, JETSON)
    budget = report["budgets"]["latency"]["budget_ms"]
    merge_device_report(dev, write_device(tmp_path / "d.json", make_device_report(report, 3 * budget)))
    kept = kept_device_report(dev)
    kept.write_text(kept.read_text() + "\n")  # edited after the merge
    neutralize(tmp_path, [JETSON], failure_of("inputs", InvalidInputError("a bad --set")))
    outputs = {rel for stage in read_manifest(dev)["stages"] for rel in stage["outputs"]}
    assert "device/device_report.json" not in outputs  # never recorded anew with another file's digest
    assert {"report.json", "report.md"} <= outputs


def test_a_run_with_no_fit_replaces_the_earlier_pass_and_prints_one_json_object(bank_path, built, tmp_path):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    assert load_report(dev)["verdict"] == "pass"
    result = _build(bank_path, out, "--set", "budgets.latency_ms=0.0001")
    assert result.exit_code == EXIT_NO_FEASIBLE_MODEL, result.output
    obj = _one_json(result)
    assert obj["ok"] is False and obj["exit_code"] == EXIT_NO_FEASIBLE_MODEL
    assert obj["devices"][0]["error"]["stage"] == "plan"
    report = json.loads((dev / "report.json").read_text())
    assert report["verdict"] == "fail" and report["failure"]["exit_code"] == EXIT_NO_FEASIBLE_MODEL
    assert report["spec"] is None and report["budgets"] is None
    md = (dev / "report.md").read_text()
    assert "PASS" not in md and "BUILD FAILED" in md
    assert not (dev / "plots").exists() or not any((dev / "plots").iterdir())


def test_an_input_error_marks_the_earlier_report_failed_and_creates_nothing_new(bank_path, built, tmp_path):
    out = _copy(built, tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a bank")
    result = _build(bad, out)
    assert result.exit_code == EXIT_INVALID_INPUT
    assert _one_json(result)["error"]["class"] == "InvalidInputError"
    report = load_report(out / JETSON)
    assert report["verdict"] == "fail" and report["failure"]["stage"] == "inputs"
    fresh = tmp_path / "fresh"
    assert _build(bad, fresh).exit_code == EXIT_INVALID_INPUT
    assert not fresh.exists()


def test_a_multi_profile_build_builds_every_profile_and_exits_with_the_most_severe_code(bank_path, tmp_path):
    data = yaml.safe_load(Path(load_profile("x86-cpu").source_file).read_text())
    data.update(name="x86-tight", aliases=[])
    data["budgets"]["latency_ms"] = 1e-6
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump(data))
    result = _build(bank_path, tmp_path / "out", profiles=(str(tight), "x86-cpu"))
    assert result.exit_code == EXIT_NO_FEASIBLE_MODEL, result.output
    devices = {d["profile"]: d for d in _one_json(result)["devices"]}
    assert devices["x86-tight"]["exit_code"] == EXIT_NO_FEASIBLE_MODEL
    assert devices["x86-cpu"]["exit_code"] == 0 and devices["x86-cpu"]["verdict"] == "pass"
    assert load_report(tmp_path / "out" / "x86-cpu")["verdict"] == "pass"
    assert load_report(tmp_path / "out" / "x86-tight")["failure"]["stage"] == "plan"
    assert "x86-tight: exit 5" in result.stderr


def test_the_merge_refuses_a_device_report_of_another_model(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    before = (out / "report.json").read_bytes()
    device = make_device_report(report, 1.0, model_sha256="0" * 64)
    with pytest.raises(InvalidInputError, match="sha256") as info:
        merge_device_report(out, write_device(tmp_path / "d.json", device))
    assert info.value.exit_code == EXIT_INVALID_INPUT
    assert (out / "report.json").read_bytes() == before and not kept_device_report(out).exists()
    result = CliRunner().invoke(
        cli, ["report", str(out), "--device-report", str(tmp_path / "d.json"), "--json"]
    )
    assert result.exit_code == EXIT_INVALID_INPUT
    assert _one_json(result)["error"]["class"] == "InvalidInputError"


def test_a_corrupted_fold_exits_7_and_writes_no_model(bank_path, tmp_path, monkeypatch):
    from wave_deploy.training import folding
    from wave_deploy.wave import init as stage2

    real_fold = folding.fold

    def corrupted_fold(wave):
        state, spec = real_fold(wave)
        state["head.bias"] = state["head.bias"] + 1e-3  # a wrong fold: the models disagree
        return state, spec

    monkeypatch.setattr(stage2, "fold", corrupted_fold)
    init = CliRunner().invoke(cli, ["init", "--templates", str(bank_path), "--depth", "1", "--embed-dim",
                                    "32", "--scaler-steps", "0", "--out", str(tmp_path / "init")])  # fmt: skip
    assert init.exit_code == EXIT_PARITY_FAILED, init.output
    assert "folded" in init.stderr and not (tmp_path / "init" / "model.safetensors").exists()
    result = _build(bank_path, tmp_path / "out")
    assert result.exit_code == EXIT_PARITY_FAILED, result.output
    report = load_report(tmp_path / "out" / JETSON)
    assert report["failure"]["stage"] == "train" and report["verdict"] == "fail"
    assert not (tmp_path / "out" / JETSON / "model.safetensors").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["build", "--profile", "no-such-device"],
        ["plan", "--profile", "jetson", "--set", "budgets.latency_ms=0.0001"],
        ["profiles", "show", "no-such-device"],
        ["templates", "info", "/no/such/bank.safetensors"],
        ["build", "--profile", "jetson", "--seed", "not-a-number"],
    ],
)
def test_json_mode_prints_one_error_object_on_every_failing_exit(args):
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code not in (0, 1), result.output
    obj = _one_json(result)
    assert obj["ok"] is False and obj["exit_code"] == result.exit_code and obj["error"]["message"]


def test_a_precision_that_fails_its_accuracy_gate_exits_7_with_a_failing_report(
    bank_path, tmp_path, impossible_accuracy_gate
):
    out = tmp_path / "out"
    lenient = ["--set", "runtime.precision=int8", "--set", "runtime.max_accuracy_drop_points=100"]
    passing = _build(bank_path, out, *lenient, profiles=("raspberry-pi-5",))
    assert passing.exit_code == 0, passing.output
    impossible_accuracy_gate()
    gate = ["--set", "runtime.precision=int8", "--set", "runtime.max_accuracy_drop_points=0"]
    result = _build(bank_path, out, *gate, profiles=("raspberry-pi-5",))
    assert result.exit_code == EXIT_PARITY_FAILED, result.output
    obj = _one_json(result)
    assert obj["exit_code"] == EXIT_PARITY_FAILED and obj["devices"][0]["error"]["stage"] == "export"
    dev = out / "raspberry-pi-5"
    report = load_report(dev)
    assert report["verdict"] == "fail" and report["failure"]["stage"] == "export"
    assert report["spec"] is not None and report["measured"]["local"] is None  # nothing timed
    int8 = next(v for v in report["accuracy"]["variants"] if v["variant"].startswith("ONNX int8"))
    assert int8["passed"] is False and int8["file"] == "rejected/model.int8.onnx"
    assert not (dev / "model.int8.onnx").exists() and (dev / "rejected" / "model.int8.onnx").is_file()
    md = (dev / "report.md").read_text()
    assert "BUILD FAILED" in md and "— FAIL" in md.splitlines()[0]


def test_running_out_of_memory_is_exit_3_with_one_line_not_a_traceback():
    import click

    @click.command("oom-probe")
    def oom_probe():
        raise MemoryError()

    cli.add_command(oom_probe)
    try:
        result = CliRunner().invoke(cli, ["oom-probe"])
    finally:
        cli.commands.pop("oom-probe")
    assert result.exit_code == EXIT_INVALID_INPUT and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "error: ran out of memory: the inputs ask for more than this machine has (smaller sizes or batches)"
    ]


def test_a_profile_batch_beyond_the_bound_is_exit_3(tmp_path):
    data = yaml.safe_load(Path(load_profile("x86-cpu").source_file).read_text())
    data["runtime"]["batch_max"] = 10**6
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["profiles", "validate", str(path)])
    assert result.exit_code == EXIT_INVALID_INPUT and "batch_max" in result.output


def test_a_model_not_above_the_chance_floor_exits_8_naming_the_check(bank_path, tmp_path):
    # 10 x chance on 10 classes is a floor of 1.0 that no model exceeds (the default 1.5 x: report tests)
    args = ["build", "--templates", str(bank_path), "--out", str(tmp_path / "o"), "--json", "--profile", "x86-cpu",
            *TINY_TRAINING, "--scaler-steps", "0", "--dense-steps", "0",
            "--set", "budgets.min_accuracy_over_chance=10"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 8, result.output
    assert "accuracy_floor" in _one_json(result)["error"]["message"]
    report = json.loads((tmp_path / "o" / "x86-cpu" / "report.json").read_text())
    floor = report["budgets"]["accuracy_floor"]
    assert (floor["min"], floor["num_classes"], floor["ok"]) == (1.0, 10, False)
    assert report["verdict"] == "fail" and report["failed_budgets"] == ["accuracy_floor"]


def test_report_lists_a_failed_build_with_its_stage_and_reason(tmp_path):
    from wave_deploy.errors import NoFeasibleModelError
    from wave_deploy.reports import write_failure_report
    from wave_deploy.reports.assemble import profile_section
    from wave_deploy.reports.files import failure_of

    dev = tmp_path / JETSON
    error = NoFeasibleModelError("no ViT size fits")
    write_failure_report(dev, profile_section(load_profile("jetson")), failure_of("plan", error))
    result = CliRunner().invoke(cli, ["report", str(dev), "--html", str(tmp_path / "i.html"), "--json"])
    assert result.exit_code == 0, result.output
    row = _one_json(result)["devices"][0]
    assert row["verdict"] == "fail" and row["failure"]["stage"] == "plan"
    assert "BUILD FAILED at stage plan (exit 5): no ViT size fits" in (tmp_path / "i.html").read_text()
    table = CliRunner().invoke(cli, ["report", str(dev)])
    cell = " ".join(table.output.replace("│", " ").split())  # the cell wraps over lines of the table
    assert all(part in cell for part in ("fail: build", "failed at plan", "(exit 5)"))


# --- artifacts that prove themselves (issue 19): every read judges again and re-hashes ------------------


def _merge(dev: Path, device_file: Path):
    return CliRunner().invoke(cli, ["report", str(dev), "--device-report", str(device_file)])


def _no_pass_anywhere(out: Path) -> None:
    """No report.json under out (every profile directory, stale/ folders included) says PASS."""
    reports = list(out.rglob("report.json"))
    assert reports
    for path in reports:
        assert json.loads(path.read_text())["verdict"] != "pass", path
        assert "PASS" not in (path.parent / "report.md").read_text(), path


def test_an_edited_kept_device_report_fails_the_report_gate_and_the_rebuild(bank_path, built, tmp_path):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    assert _merge(dev, _over_budget_device_report(dev, tmp_path / "d.json")).exit_code == 0
    assert load_report(dev)["verdict"] == "fail"
    kept = kept_device_report(dev)
    passing = json.loads(kept.read_text())
    budget = load_report(dev)["budgets"]["latency"]["budget_ms"]
    passing["latency"] = make_device_report(load_report(dev), 0.5 * budget)["latency"]
    kept.write_text(json.dumps(passing))  # a passing latency, the right model, a valid file
    for args in (["--fail-on-budget"], ["--html", str(tmp_path / "i.html")], []):
        gate = CliRunner().invoke(cli, ["report", str(dev), *args])
        assert gate.exit_code == EXIT_INVALID_INPUT, gate.output
        assert gate.stderr.strip().splitlines()[-1].startswith(f"error: {kept}: changed since the build")
    assert not (tmp_path / "i.html").exists()
    again = _build(bank_path, out)
    assert again.exit_code == EXIT_INVALID_INPUT, again.output
    assert _one_json(again)["devices"][0]["error"]["stage"] == "report"
    assert "device_report.json: not the device report that was merged" in again.stderr
    _no_pass_anywhere(out)
    after = CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget"])
    assert after.exit_code == EXIT_BUDGET_BROKEN, after.output


def test_a_kept_device_report_deleted_after_a_merge_fails_the_rebuild(bank_path, built, tmp_path):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    assert _merge(dev, _over_budget_device_report(dev, tmp_path / "d.json")).exit_code == 0
    kept_device_report(dev).unlink()
    assert CliRunner().invoke(cli, ["report", str(dev)]).exit_code == EXIT_INVALID_INPUT
    again = _build(bank_path, out)
    assert again.exit_code == EXIT_INVALID_INPUT and "merged into this build is missing" in again.stderr
    _no_pass_anywhere(out)


def test_a_hand_edited_pass_verdict_is_recomputed_and_refused(built, tmp_path):

    out = _copy(built, tmp_path)
    dev = out / JETSON
    assert _merge(dev, _over_budget_device_report(dev, tmp_path / "d.json")).exit_code == 0
    report = json.loads((dev / "report.json").read_text())
    assert report["budgets"]["latency"]["ok"] is False
    report.update(verdict="pass", failed_budgets=[])  # the budget entries still say not ok
    _forge(
        dev, report
    )  # ... and the manifest rewritten to match: the recomputed verdict refuses it all the same
    result = CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget", "--json"])
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert "stored verdict 'pass'" in _one_json(result)["error"]["message"]
    assert str(dev / "report.json") in result.stderr
    report["budgets"]["latency"].update(ok=True, value_ms=0.001)  # entries edited too: not their evidence
    _forge(dev, report)
    result = CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget"])
    assert result.exit_code == EXIT_INVALID_INPUT and "budgets.latency.value_ms" in result.stderr


def _forge(dev: Path, report: dict) -> None:
    """Write report.json and rewrite manifest.json's record of it to match (the kept device report untouched)."""
    from wave_deploy.fileio import sha256_file

    (dev / "report.json").write_text(json.dumps(report))
    manifest = json.loads((dev / "manifest.json").read_text())
    for stage in manifest["stages"]:
        if "report.json" in stage["outputs"]:
            stage["outputs"]["report.json"] = sha256_file(dev / "report.json")
    (dev / "manifest.json").write_text(json.dumps(manifest))


def _gate(dev: Path):
    return CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget"])


def test_a_report_claiming_predictions_where_the_device_measured_is_refused(tmp_path):
    from _report_data import rejudge

    from wave_deploy.reports.evidence import annotate
    from wave_deploy.reports.judge import Limits, judge_budgets
    from wave_deploy.reports.verify import observed_from_evidence

    dev, report = write_build(tmp_path, JETSON)
    budget = report["budgets"]["latency"]["budget_ms"]
    memory = {"peak_rss_mib": 900.0, "tensorrt_device_mib": 3000.0}  # the memory budget is 512 MiB
    device = make_device_report(report, 3 * budget, memory=memory, accuracy={"top1": 0.2, "n_images": 100})
    merge_device_report(dev, write_device(tmp_path / "d.json", device))
    merged = load_report(dev)
    assert merged["failed_budgets"] == ["latency", "memory", "accuracy"]
    assert _gate(dev).exit_code == EXIT_BUDGET_BROKEN
    pred = merged["prediction"]
    level = merged["budgets"]["latency"]["evidence"]
    assert level == "device" and pred["latency_ms"] <= budget
    claims = {
        "latency": {"value_ms": pred["latency_ms"], "evidence": "analytic", "source": "predicted"},
        "memory": {"value_mib": pred["memory_mib"], "evidence": "analytic", "source": "predicted"},
        "accuracy": {
            "value": merged["accuracy"]["val_acc"],
            "evidence": "validation",
            "source": "validation split",
        },
    }
    for forged in (["latency", "memory", "accuracy"], ["latency"], ["memory"], ["accuracy"]):
        # budget entries claim the build's own figures and the verdict is judged again on those claims (all
        # three: PASS); measured.device still records the failing device figures, the kept file still matches
        forgery = json.loads(json.dumps(merged))
        for name in forged:
            check = forgery["budgets"][name]
            check.update(claims[name])
            for key in ("predicted_ms", "predicted_mib", "validation_value", "note"):
                check.pop(key, None)
        rejudge(forgery)
        assert not set(forged) & set(forgery["failed_budgets"])
        assert forgery["verdict"] == ("pass" if len(forged) == 3 else "fail")
        _forge(dev, forgery)
        result = _gate(dev)
        assert result.exit_code == EXIT_INVALID_INPUT, (forged, result.output)
        assert f"budgets.{forged[0]}" in result.stderr and str(dev / "report.json") in result.stderr
    fast = make_device_report(merged, 0.5 * budget)["latency"]
    for field, value in (
        ("latency", fast),
        ("memory", {"peak_rss_mib": 100.0, "tensorrt_device_mib": 100.0}),
        ("memory", None),
        ("accuracy", {"top1": 0.99, "n_images": 100}),
        ("accuracy", None),
        ("precision", "fp32"),
    ):
        # measured.device edited and every budget judged again on it, as a merge would: report.json agrees
        # with itself, only the kept device report (untouched, still matching its recorded sha256) disagrees
        forgery = json.loads(json.dumps(merged))
        forgery["measured"]["device"][field] = value
        observed, extra = observed_from_evidence(forgery, "forgery")
        judged = judge_budgets(Limits.of_report(forgery["budgets"], batch=1), observed)
        forgery["budgets"] = annotate(dict(judged.checks), extra)
        forgery["verdict"], forgery["failed_budgets"] = judged.verdict, judged.failed
        _forge(dev, forgery)
        result = _gate(dev)
        assert result.exit_code == EXIT_INVALID_INPUT, (field, result.output)
        assert f"measured.device.{field}" in result.stderr and "the kept device report" in result.stderr


def test_a_second_merge_without_memory_replaces_the_first_and_still_proves_itself(tmp_path):
    dev, report = write_build(tmp_path, JETSON)
    budget = report["budgets"]["latency"]["budget_ms"]
    first = make_device_report(report, 0.5 * budget, memory={"tensorrt_device_mib": 3000.0})
    merge_device_report(dev, write_device(tmp_path / "first.json", first))
    assert load_report(dev)["failed_budgets"] == ["memory"]
    assert load_report(dev)["budgets"]["memory"]["evidence"] == "device"
    second = make_device_report(report, 0.5 * budget)  # latency only: memory falls back to the prediction
    merge_device_report(dev, write_device(tmp_path / "second.json", second))
    merged = load_report(dev)
    assert merged["budgets"]["memory"]["evidence"] == "analytic"
    assert merged["budgets"]["memory"]["value_mib"] == merged["prediction"]["memory_mib"]
    assert merged["verdict"] == "pass" and merged["measured"]["device"]["memory"] is None
    assert _gate(dev).exit_code == 0


def test_an_edited_model_hash_in_plan_json_no_longer_lets_another_models_report_merge(built, tmp_path):
    from wave_deploy.fileio import sha256_bytes

    out = _copy(built, tmp_path)
    dev = out / JETSON
    before = (dev / "report.json").read_bytes()
    device = json.loads(_over_budget_device_report(dev, tmp_path / "d.json").read_text())
    other = sha256_bytes(b"another model")
    plan_path = dev / "bundle" / "plan.json"
    plan = json.loads(plan_path.read_text())
    plan["sha256"][device["model_file"]] = other
    plan_path.write_text(json.dumps(plan))
    device.update(model_sha256=other, latency=make_device_report(load_report(dev), 0.001)["latency"])
    result = _merge(dev, write_device(tmp_path / "other.json", device))
    assert result.exit_code == EXIT_INVALID_INPUT and f"{plan_path}: changed since" in result.stderr
    (dev / "bundle" / device["model_file"]).write_bytes(b"another model")  # the model itself replaced
    plan_path.write_bytes((built / JETSON / "bundle" / "plan.json").read_bytes())
    result = _merge(dev, write_device(tmp_path / "other.json", device))
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert f"{dev / 'bundle' / device['model_file']}: changed since" in result.stderr
    assert (dev / "report.json").read_bytes() == before and not kept_device_report(dev).exists()


def test_a_device_report_whose_p99_is_negative_is_refused_and_report_json_is_unchanged(built, tmp_path):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    before = (dev / "report.json").read_bytes()
    device = json.loads(_over_budget_device_report(dev, tmp_path / "d.json").read_text())
    device["latency"]["p99_ms"] = -1.0
    result = _merge(dev, write_device(tmp_path / "neg.json", device))
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'neg.json'}: invalid device report: latency: p99_ms must be positive, got -1.0"
    ]
    assert (dev / "report.json").read_bytes() == before and not kept_device_report(dev).exists()


@pytest.mark.parametrize(
    "key", ["session_peak_rss_mib", "build_peak_mib", "tensorrt_device_mib", "other_mib"]
)
def test_a_memory_figure_too_large_for_a_float_is_refused_in_one_line_and_nothing_is_kept(tmp_path, key):
    dev, report = write_build(tmp_path, JETSON)
    before = {name: (dev / name).read_bytes() for name in ("report.json", "manifest.json")}
    budget = report["budgets"]["latency"]["budget_ms"]
    device = make_device_report(report, 0.5 * budget, memory={"peak_rss_mib": 100.0, key: 10**400})
    result = _merge(dev, write_device(tmp_path / "huge.json", device))
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    why = f"memory: {key} must be a finite number of MiB >= 0, got an integer too large for a float"
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'huge.json'}: invalid device report: {why}"
    ]
    assert {name: (dev / name).read_bytes() for name in before} == before
    assert not kept_device_report(dev).exists()
    assert CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget"]).exit_code == 0


def test_a_merge_that_fails_while_writing_keeps_the_earlier_kept_report(tmp_path, monkeypatch):
    from wave_deploy.reports import merge

    dev, report = write_build(tmp_path, JETSON)
    budget = report["budgets"]["latency"]["budget_ms"]
    merge_device_report(dev, write_device(tmp_path / "slow.json", make_device_report(report, 3 * budget)))
    kept = kept_device_report(dev)
    earlier = {p: p.read_bytes() for p in (kept, dev / "report.json", dev / "manifest.json")}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(merge, "write_report_files", disk_full)
    fast = write_device(tmp_path / "fast.json", make_device_report(report, 0.5 * budget))
    with pytest.raises(OSError):
        merge_device_report(dev, fast)
    assert {p: p.read_bytes() for p in earlier} == earlier  # the measured FAIL stands, as it was recorded
    fresh, _ = write_build(tmp_path / "fresh", JETSON)
    with pytest.raises(OSError):
        merge_device_report(fresh, fast)
    assert not kept_device_report(fresh).exists()  # no kept file that nothing records
    monkeypatch.undo()
    assert load_report(dev)["verdict"] == "fail"
    assert CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget"]).exit_code == EXIT_BUDGET_BROKEN
    assert CliRunner().invoke(cli, ["report", str(fresh), "--fail-on-budget"]).exit_code == 0


def test_report_expect_manifest_pins_the_directory_to_the_build(bank_path, built, tmp_path):
    from wave_deploy.fileio import sha256_file

    out = _copy(built, tmp_path)
    dev = out / JETSON
    again = _build(bank_path, out)  # the build's --json names the manifest it wrote: the CI keeps it
    pinned = _one_json(again)["devices"][0]["manifest_sha256"]
    assert again.exit_code == 0 and pinned == sha256_file(dev / "manifest.json")
    ok = CliRunner().invoke(cli, ["report", str(dev), "--expect-manifest", pinned, "--json"])
    assert ok.exit_code == 0 and _one_json(ok)["devices"][0]["manifest_sha256"] == pinned
    # a consistent forgery (report.json and manifest.json rewritten together) is caught by the pin alone
    report = json.loads((dev / "report.json").read_text())
    report["budgets"]["latency"]["budget_ms"] *= 1000
    (dev / "report.json").write_text(json.dumps(report))
    manifest = json.loads((dev / "manifest.json").read_text())
    for stage in manifest["stages"]:
        if "report.json" in stage["outputs"]:
            stage["outputs"]["report.json"] = sha256_file(dev / "report.json")
    (dev / "manifest.json").write_text(json.dumps(manifest))
    assert CliRunner().invoke(cli, ["report", str(dev)]).exit_code == 0  # unpinned: not detectable
    pin = CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget", "--expect-manifest", pinned])
    assert pin.exit_code == EXIT_INVALID_INPUT and "manifest.json: sha256" in pin.stderr


# --- no PASS after any failure (issue 19): usage errors included, earlier models moved aside -------------


@pytest.mark.parametrize(
    "extra, code",
    [
        (["--set", "budgets.latency_ms=-1"], EXIT_INVALID_INPUT),  # refused before any per-profile work
        (["--dense-epochs", "0"], 2),  # click's own range check, before the command body runs
        (["--set", "budgets.latency_ms"], 2),  # a setting without '='
        (["--no-such-option"], 2),  # click: unknown option
        (["--set", "budgets.latency_ms=0.0001"], EXIT_NO_FEASIBLE_MODEL),  # fails at the plan stage
    ],
)
def test_a_failed_run_leaves_no_pass_and_moves_the_earlier_models_aside(
    bank_path, built, tmp_path, extra, code
):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    shipped = {p: (dev / p).read_bytes() for p in ("model.onnx", "model.safetensors", "bundle/plan.json")}
    result = _build(bank_path, out, *extra)
    assert result.exit_code == code, result.output
    _no_pass_anywhere(out)
    report = json.loads((dev / "report.json").read_text())
    assert report["failure"]["exit_code"] == code
    moved = report["artifacts"]["moved_aside"]
    assert moved.startswith("stale/") and moved in (dev / "report.md").read_text()
    for rel, data in shipped.items():
        assert not (dev / rel).exists() and (dev / moved / rel).read_bytes() == data
    assert not (dev / "bundle").exists() and not list(dev.glob("model*.onnx"))
    if code == EXIT_NO_FEASIBLE_MODEL:  # (once: a failure at the plan stage left the most records behind)
        again = _build(bank_path, out)  # the passing command passes again (the shared model is reused)
        assert again.exit_code == 0 and load_report(dev)["verdict"] == "pass"


def test_a_multi_profile_build_stopped_by_an_interrupt_leaves_no_pass_for_the_profiles_not_reached(
    bank_path, built, tmp_path, monkeypatch
):
    from wave_deploy.options import BuildOptions
    from wave_deploy.pipeline import build as pipeline

    out = _copy(built, tmp_path)

    def interrupted(profile, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_build_one", interrupted)
    options = BuildOptions(templates=str(bank_path), out=str(out))
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(["x86-cpu", "jetson"], options)
    report = load_report(out / JETSON)
    assert report["failure"]["stage"] == "not built" and report["artifacts"]["moved_aside"]
    assert not (out / JETSON / "model.onnx").exists()
    _no_pass_anywhere(out)


def test_an_earlier_pass_restored_over_a_failure_report_is_refused(bank_path, built, tmp_path):
    out = _copy(built, tmp_path)
    dev = out / JETSON
    earlier = {name: (dev / name).read_bytes() for name in ("report.json", "report.md")}
    assert _build(bank_path, out, "--set", "budgets.latency_ms=-1").exit_code == EXIT_INVALID_INPUT
    moved = dev / load_report(dev)["artifacts"]["moved_aside"]
    for path in moved.iterdir():  # roll the directory back to the earlier, genuinely passing build
        path.replace(dev / path.name)
    for name, data in earlier.items():
        (dev / name).write_bytes(data)
    result = CliRunner().invoke(cli, ["report", str(dev), "--fail-on-budget"])
    assert result.exit_code == EXIT_INVALID_INPUT and f"{dev / 'report.json'}: changed since" in result.stderr


def test_the_profiles_and_out_of_refused_arguments_are_read_in_every_spelling():
    from wave_deploy.cli.build_cmd import requested_in_argv
    from wave_deploy.profiles import list_profiles

    args = ["--profile", "jetson", "--profile=x86-cpu", "--out=o1", "--dense-epochs", "0", "--out", "o2"]
    assert requested_in_argv(args) == (["jetson", "x86-cpu"], "o2")
    assert requested_in_argv(["--bogus", "--profile"]) == ([], "artifacts")  # a flag without its value
    names = [p.name for p in list_profiles()]
    assert requested_in_argv(["--all-profiles", "--", "--profile", "x"]) == (names, "artifacts")
