"""Evidence levels on every verdict (issue 21): what each budget was judged on, --require-evidence and its
exit code 9, device memory and accuracy merged and judged, the host standing in for the device, notes where
a measurement disagrees with its prediction, and the deployed precision in the report's headline."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from _banks import mnist_bank_file
from _report_data import make_device_report, make_report, rejudge, write_build, write_device
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import EXIT_BUDGET_BROKEN, EXIT_INSUFFICIENT_EVIDENCE, InsufficientEvidenceError
from wave_deploy.pipeline.records import BenchRecord, ExportRecord, PlanRecord, TrainRecord
from wave_deploy.pipeline.results import SEVERITY, DeviceResult, outcome
from wave_deploy.profiles import apply_overrides, load_profile
from wave_deploy.reports import load_report, write_report_files
from wave_deploy.reports.assemble import assemble_report
from wave_deploy.reports.evidence import ANALYTIC_ERROR_FACTOR, disagreement, latency_level, stricter
from wave_deploy.reports.judge import EVIDENCE_RANK, Limits, Observed, judge_budgets, observed_in
from wave_deploy.reports.merge import merge_device_report

KIT_DIR = Path(__file__).resolve().parents[1] / "export"
RPI = "raspberry-pi-5"
JETSON = "jetson-orin-nano-8gb"
# enough training for the chance floor (1.5 x chance) to pass, so that only the evidence can fail a build
TRAINING = ["--scaler-steps", "4", "--dense-steps", "20", "--batch-size", "32", "--bench-iterations", "5"]

# --- the judge ----------------------------------------------------------------------------------------------

LIMITS = Limits(latency_ms=5.0, latency_percentile="p99", latency_batch=1, memory_mib=512.0)


def test_every_level_meets_exactly_the_requirements_of_its_rank():
    measured = {"device", "host", "validation"}
    for level, required in itertools.product(EVIDENCE_RANK, ("device", "calibrated", "any")):
        expect = {"any": True, "calibrated": level in measured | {"calibrated"}, "device": level in measured}
        judged = judge_budgets(dataclasses.replace(LIMITS, require_evidence=required),
                               Observed(latency_ms=1.0, memory_mib=100.0, latency_evidence=level,
                                        memory_evidence="device"))  # fmt: skip
        lat = judged.checks["latency"]
        assert (lat["evidence"], lat["required_evidence"]) == (level, required)
        assert lat["evidence_ok"] is expect[required] and lat["ok"] is expect[required], (level, required)
        assert judged.unproven == ([] if expect[required] else ["latency"]) == judged.failed
    # the memory models have no calibration: "calibrated" asks them nothing, "device" asks a measurement
    for required, ok in (("calibrated", True), ("device", False)):
        judged = judge_budgets(dataclasses.replace(LIMITS, require_evidence=required),
                               Observed(latency_ms=1.0, memory_mib=100.0, latency_evidence="device"))  # fmt: skip
        assert judged.checks["memory"]["evidence_ok"] is ok and judged.checks["latency"]["evidence_ok"]


def test_a_broken_budget_is_not_unproven_and_the_judgement_survives_a_round_trip():
    limits = dataclasses.replace(LIMITS, require_evidence="device")
    judged = judge_budgets(limits, Observed(latency_ms=9.0, memory_mib=100.0, memory_evidence="device"))
    assert judged.failed == ["latency"] and judged.unproven == []  # broken: exit 8, not 9
    assert "latency judged on analytic evidence; device evidence required" in judged.reasons
    again = judge_budgets(Limits.of_report(judged.checks, batch=1), observed_in(judged.checks))
    assert again.checks == judged.checks and again.unproven == judged.unproven


def test_a_report_from_before_levels_reads_as_analytic_or_device():
    old = {"latency": {"budget_ms": 5.0, "percentile": "p99", "value_ms": 1.0, "source": "measured on device",
                       "ok": True}, "memory": {"budget_mib": 512.0, "value_mib": 1.0, "ok": True}}  # fmt: skip
    seen = observed_in(old)
    assert (seen.latency_evidence, seen.memory_evidence, seen.accuracy_evidence) == ("device", "analytic",
                                                                                       "validation")  # fmt: skip
    assert Limits.of_report(old, batch=1).require_evidence == "any"


def test_levels_of_predictions_and_the_stricter_requirement():
    assert latency_level("analytic", []) == "analytic"
    assert latency_level("calibrated:/c.json", []) == "calibrated"
    assert latency_level("calibrated:/c.json", ["extrapolated: depth=14 outside 1..12"]) == "extrapolated"
    assert stricter("any", "device") == stricter("device", "calibrated") == "device"
    assert stricter("any", "calibrated") == "calibrated"


def test_a_measurement_beyond_the_stated_error_gets_a_note():
    analytic = ("factor", ANALYTIC_ERROR_FACTOR, "a factor of 2 (analytic model)")
    assert disagreement("latency (ms)", 1.0, 0.5, analytic) is None  # exactly 2x: within
    note = disagreement("latency (ms)", 10.3, 0.56, analytic)  # issue 21's x86 kit: 18x
    assert note and "18.39x" in note and "a factor of 2" in note
    assert disagreement("memory (MiB)", 100.0, 80.0, ("pct", 25.0, "25%")) is None
    assert "2.62x" in disagreement("memory (MiB)", 182.8, 69.8, ("pct", 25.0, "25%"))  # issue 21's kit


# --- exit codes ------------------------------------------------------------------------------------------


def _required(report: dict, level: str) -> dict:
    for check in report["budgets"].values():
        if check:
            check["required_evidence"] = level
    return rejudge(report)


def test_a_verdict_on_weaker_evidence_exits_9_and_a_broken_budget_still_exits_8():
    assert SEVERITY.index(EXIT_BUDGET_BROKEN) < SEVERITY.index(EXIT_INSUFFICIENT_EVIDENCE) < SEVERITY.index(0)
    report = _required(make_report(latency_budget_ms=5.0), "device")
    assert report["verdict"] == "fail" and set(report["failed_budgets"]) >= {"latency", "memory"}
    result = DeviceResult("jetson", "out", report)
    assert result.exit_code == EXIT_INSUFFICIENT_EVIDENCE
    for strict in (True, False):  # --no-fail-on-budget forgives broken budgets, not a requirement
        assert isinstance(outcome([result], strict=strict), InsufficientEvidenceError)
    report["budgets"]["memory"]["value_mib"] = 1e6  # now a budget is broken too
    broken = DeviceResult("jetson", "out", rejudge(report))
    assert (
        broken.exit_code == EXIT_BUDGET_BROKEN and outcome([broken, result]).exit_code == EXIT_BUDGET_BROKEN
    )
    assert outcome([broken], strict=False).exit_code == EXIT_INSUFFICIENT_EVIDENCE


# --- device measurements merged and judged ----------------------------------------------------------------


def _device(report: dict, **memory_and_accuracy) -> dict:
    budget = report["budgets"]["latency"]["budget_ms"]
    return make_device_report(report, 0.5 * budget, **memory_and_accuracy)


def test_device_memory_and_build_peak_are_judged_and_satisfy_a_device_requirement(tmp_path):
    out, report = write_build(tmp_path, "jetson", latency_budget_ms=5.0)
    write_report_files(out, _required(report, "device"))
    assert load_report(out)["verdict"] == "fail"  # everything predicted: not enough for "device"
    predicted = report["prediction"]["memory_mib"]
    dev = _device(report, memory={"tensorrt_device_mib": 87.0, "build_peak_mib": 900.0,
                                  "trtexec_peak_rss_mib": 700.0})  # fmt: skip
    merged = merge_device_report(out, write_device(tmp_path / "d.json", dev))
    mem, build = merged["budgets"]["memory"], merged["budgets"]["build_memory"]
    assert (mem["value_mib"], mem["evidence"], mem["predicted_mib"]) == (87.0, "device", predicted)
    assert mem["source"] == "measured on device (tensorrt_device_mib)"
    assert (build["value_mib"], build["evidence"]) == (900.0, "device")
    assert merged["verdict"] == "pass" and merged["budgets"]["latency"]["evidence"] == "device"
    md = (out / "report.md").read_text()
    assert "| runtime memory | " in md and "87.0 MiB" in md and f"{predicted:.1f} MiB" in md


def test_a_device_memory_far_from_the_prediction_is_noted_and_can_fail_the_budget(tmp_path):
    out, report = write_build(tmp_path, "jetson", latency_budget_ms=5.0)
    dev = _device(report, memory={"tensorrt_device_mib": 3000.0})  # budget 512 MiB
    merged = merge_device_report(out, write_device(tmp_path / "d.json", dev))
    mem = merged["budgets"]["memory"]
    assert not mem["ok"] and mem["evidence_ok"] and "memory" in merged["failed_budgets"]
    assert "beyond the model's stated error of 25% (memory model)" in mem["note"]
    assert mem["note"] in (out / "report.md").read_text()


def test_device_top1_at_chance_fails_the_accuracy_floor_on_device_evidence(tmp_path):
    out, report = write_build(tmp_path, "jetson", latency_budget_ms=5.0)
    assert report["budgets"]["accuracy_floor"]["ok"]  # 93% on the build machine's validation split
    accuracy = {"top1": 0.127, "n_images": 55, "passed": True, "build_machine_top1": 0.127}  # issue 21's kit
    merged = merge_device_report(out, write_device(tmp_path / "d.json", _device(report, accuracy=accuracy)))
    floor = merged["budgets"]["accuracy_floor"]
    assert (floor["value"], floor["evidence"], floor["validation_value"]) == (0.127, "device", 0.9312)
    assert not floor["ok"] and "accuracy_floor" in merged["failed_budgets"]
    assert merged["budgets"]["accuracy"]["value"] == 0.127  # budgets.min_accuracy 0.5 too


# --- TensorRT's memory lines (the kit's trt_device.parse_memory, pure) ------------------------------------

TRTEXEC_LOG = """\
[08/08/2022-01:36:09] [I] [TRT] [MemUsageChange] Init CUDA: CPU +229, GPU +0, now: CPU 269, GPU 1793 (MiB)
[08/08/2022-01:36:09] [I] [TRT] Loaded engine size: 21 MiB
[08/08/2022-01:36:13] [I] [TRT] [MemUsageChange] TensorRT-managed allocation in engine deserialization: CPU +0, GPU +20, now: CPU 0, GPU 20 (MiB)
[08/08/2022-01:36:13] [I] [TRT] [MemUsageChange] Init cuDNN: CPU +0, GPU +1, now: CPU 653, GPU 2201 (MiB)
[08/08/2022-01:36:13] [I] [TRT] [MemUsageChange] TensorRT-managed allocation in IExecutionContext creation: CPU +0, GPU +67, now: CPU 0, GPU 87 (MiB)
[10/12/2024-15:46:16] [TRT] [I] [MemUsageStats] Peak memory usage of TRT CPU/GPU memory allocators: CPU 8 MiB, GPU 1938 MiB
[10/12/2024-15:46:23] [TRT] [I] [MemUsageStats] Peak memory usage during Engine building and serialization: CPU: 4029 MiB
"""


def test_trtexec_memory_lines_are_parsed_into_engine_and_build_memory(monkeypatch):
    monkeypatch.syspath_prepend(str(KIT_DIR))
    trt_device = importlib.import_module("trt_device")
    assert (
        trt_device.parse_memory(TRTEXEC_LOG)
        == {
            "tensorrt_device_mib": 87.0,  # engine + context, TensorRT-managed; not CUDA's or cuDNN's process totals
            "build_peak_gpu_mib": 1938.0,
            "build_peak_cpu_mib": 4029.0,
            "build_peak_mib": 4029.0 + 1938.0,
        }
    )
    assert trt_device.parse_memory("[I] nothing about memory") == {}
    sys.modules.pop("trt_device", None)


# --- builds through the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """One out root: a default raspberry-pi-5 int8 build (exit 0), then jetson with --require-evidence device
    (exit 9, the model trained for the first build reused)."""
    bank = mnist_bank_file(tmp_path_factory.mktemp("bank"))
    out = tmp_path_factory.mktemp("out")
    common = ["build", "--templates", str(bank), "--out", str(out), "--json", *TRAINING]
    rpi = CliRunner().invoke(cli, [*common, "--profile", RPI, "--set", "runtime.precision=int8"])
    jetson = CliRunner().invoke(cli, [*common, "--profile", "jetson", "--require-evidence", "device"])
    return SimpleNamespace(bank=bank, out=out, rpi=rpi, jetson=jetson)


def _json(result) -> dict:
    return json.loads(result.stdout)


def test_a_default_build_records_the_evidence_of_every_budget(builds):
    assert builds.rpi.exit_code == 0, builds.rpi.output
    report = load_report(builds.out / RPI)
    levels = {name: check["evidence"] for name, check in report["budgets"].items() if check}
    assert levels == {"latency": "analytic", "memory": "analytic", "accuracy_floor": "validation"}
    assert all(check["required_evidence"] == "any" and check["evidence_ok"]
               for check in report["budgets"].values() if check)  # fmt: skip
    assert _json(builds.rpi)["devices"][0]["evidence"] == levels
    md = (builds.out / RPI / "report.md").read_text()
    assert "| latency (p90) | <= 120 ms |" in md and "| predicted | analytic | ok |" in md


def test_the_headline_names_the_deployed_precision_and_runtime(builds):
    md = (builds.out / RPI / "report.md").read_text()
    assert md.splitlines()[0] == (
        f"# {RPI}: {load_report(builds.out / RPI)['spec_name']} on ONNX Runtime int8 (static-qdq) — PASS"
    )


def test_jetson_requiring_device_evidence_without_a_device_report_exits_9(builds):
    assert builds.jetson.exit_code == EXIT_INSUFFICIENT_EVIDENCE, builds.jetson.output
    summary = _json(builds.jetson)
    assert summary["error"]["class"] == "InsufficientEvidenceError" and summary["exit_code"] == 9
    assert summary["devices"][0]["required_evidence"] == "device"
    report = load_report(builds.out / JETSON)
    assert report["verdict"] == "fail" and {"latency", "memory", "build_memory"} <= set(
        report["failed_budgets"]
    )
    assert report["budgets"]["latency"]["evidence_ok"] is False
    assert report["budgets"]["accuracy_floor"]["ok"]  # measured on validation images: enough for "device"
    assert "FAIL (evidence)" in (builds.out / JETSON / "report.md").read_text()
    # the recorded requirement holds on a later read: report --fail-on-budget exits 9 too
    gate = CliRunner().invoke(cli, ["report", str(builds.out / JETSON), "--fail-on-budget"])
    assert gate.exit_code == EXIT_INSUFFICIENT_EVIDENCE, gate.output
    html = CliRunner().invoke(cli, ["report", str(builds.out), "--html", str(builds.out / "index.html")])
    assert html.exit_code == 0 and "FAIL (evidence)" in (builds.out / "index.html").read_text()


def test_the_build_host_counts_only_where_the_profile_says_it_is_the_device(builds):
    """The raspberry-pi-5 build's own records, assembled again for a profile whose build host is the device:
    its local benchmark of the deployed int8 file and the session's memory are host evidence."""
    from wave_deploy._kit.kit_memory import session_memory

    out = builds.out / RPI
    read = lambda name: json.loads((out / name).read_text())
    profile = apply_overrides(
        load_profile(RPI), ["runtime.precision=int8", "hardware.build_host_is_device=true"]
    )
    bench = read("bench.json")
    assert bench["model"] == "model.int8.onnx"
    memory = session_memory(out / "model.int8.onnx", 1, 1, ["CPUExecutionProvider"])
    data = SimpleNamespace(info=SimpleNamespace(name="mnist-5k", num_classes=10))
    records = (PlanRecord.load(read("plan.json"), "plan"), TrainRecord.load(read("train.json"), "train"),
               ExportRecord.load(read("export.json"), "export"))  # fmt: skip
    report = assemble_report(out, profile, *records, BenchRecord.load({**bench, "memory": memory}, "b"), data,
                             require_evidence="device")  # fmt: skip
    lat, mem = report["budgets"]["latency"], report["budgets"]["memory"]
    assert (lat["evidence"], lat["value_ms"]) == ("host", bench["stats"]["p90_ms"])
    assert lat["predicted_ms"] == report["prediction"]["latency_ms"] and lat["evidence_ok"]
    assert (mem["evidence"], mem["value_mib"]) == ("host", memory["session_peak_rss_mib"])
    assert report["verdict"] == "pass"
    # the same records for the profile as shipped: predictions only, not enough for "device"
    shipped = apply_overrides(load_profile(RPI), ["runtime.precision=int8"])
    plain = assemble_report(
        out, shipped, *records, BenchRecord.load(bench, "b"), data, require_evidence="device"
    )
    assert plain["budgets"]["latency"]["evidence"] == "analytic" and plain["verdict"] == "fail"


def test_an_extrapolated_latency_and_the_calibrations_fit_error_as_its_stated_error(tmp_path):
    from test_latency import _calibration_dict, _write

    # covers depth 1, width 32, batch 1 only; its worst fit error is 2%
    calibration = _write(tmp_path, _calibration_dict())
    out = tmp_path / "build"
    report = make_report("x86-cpu", latency_budget_ms=15.0, out=out, calibration=calibration)
    write_report_files(out, report)
    assert report["budgets"]["latency"]["evidence"] == "extrapolated"
    predicted = report["budgets"]["latency"]["value_ms"]
    dev = make_device_report(report, 1.1 * predicted)  # 10% off: beyond the calibration's 2%
    merged = merge_device_report(out, write_device(tmp_path / "d.json", dev))
    lat = merged["budgets"]["latency"]
    assert (lat["evidence"], lat["predicted_ms"]) == ("device", predicted)
    assert "2.0% (the calibration's worst fit error)" in lat["note"] and "1.10x" in lat["note"]


def test_a_read_of_a_merged_report_never_opens_the_calibration_file_its_prediction_names(
    tmp_path, monkeypatch
):
    """The disagreement notes are written at the merge (from the calibration's fit error); every later read
    judges the verdict without them, so it rests on nothing outside the build directory: a calibration file
    replaced since (here: one that cannot be read at all) changes neither the exit code nor the verdict."""
    from test_latency import _calibration_dict, _write

    from wave_deploy.reports import evidence

    calibration = _write(tmp_path, _calibration_dict())
    out = tmp_path / "build"
    report = make_report("x86-cpu", latency_budget_ms=15.0, out=out, calibration=calibration)
    write_report_files(out, report)
    predicted = report["budgets"]["latency"]["value_ms"]
    merged = merge_device_report(
        out, write_device(tmp_path / "d.json", make_device_report(report, 1.1 * predicted))
    )
    assert "the calibration's worst fit error" in merged["budgets"]["latency"]["note"]  # written at the merge

    def unreadable(path):
        raise AssertionError(f"a read opened the calibration file {path}")

    monkeypatch.setattr(evidence, "read_calibration_file", unreadable)
    for args in (["report", str(out)], ["report", str(out), "--fail-on-budget"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert load_report(out)["budgets"]["latency"]["note"] == merged["budgets"]["latency"]["note"]


def test_a_quick_calibrations_stated_error_is_its_own_fit_error_and_its_evidence_stays_analytic(tmp_path):
    from test_latency import _calibration_dict, _write

    from wave_deploy.reports.evidence import stated_latency_error

    calibration = _write(tmp_path, {**_calibration_dict(), "quick": True})  # worst fit error 2%
    out = tmp_path / "build"
    report = make_report("x86-cpu", latency_budget_ms=15.0, out=out, calibration=calibration)
    write_report_files(out, report)
    assert report["budgets"]["latency"]["evidence"] == "analytic"  # a smoke check, not calibrated evidence
    kind, size, stated = stated_latency_error(f"quick-calibration:{calibration}")
    assert (kind, stated) == (
        "pct",
        "2.0% (the quick calibration's worst fit error)",
    ) and size == pytest.approx(2)
    assert stated_latency_error("quick-calibration:") == stated_latency_error("analytic")
    predicted = report["budgets"]["latency"]["value_ms"]
    dev = make_device_report(report, 1.1 * predicted)  # 10% off: within a factor of 2, beyond the fit's 2%
    merged = merge_device_report(out, write_device(tmp_path / "d.json", dev))
    lat = merged["budgets"]["latency"]
    assert "2.0% (the quick calibration's worst fit error)" in lat["note"] and "1.10x" in lat["note"]
