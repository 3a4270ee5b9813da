"""Reports: report.md, deterministic plots and merging device_report.json."""

from __future__ import annotations

import io
import json

import pytest
from _report_data import (
    PNG_SIZE,
    make_device_report,
    make_report,
    rejudge,
    write_build,
    write_device,
)
from PIL import Image

from wave_deploy.bench.stats import LATENCY_KEYS
from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError
from wave_deploy.reports import (
    render_markdown,
    write_report_files,
)
from wave_deploy.reports.merge import merge_device_report
from wave_deploy.reports.plots import frontier_png, latency_png, training_png

# --- report.md --------------------------------------------------------------------------------------------


def test_markdown_has_every_section_and_the_reports_numbers(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Device", "## Budget verdict", "## Chosen model", "## Latency", "## Memory",
                    "## Accuracy", "## Parity", "## Sizes", "## Plots", "## Artifacts"):  # fmt: skip
        assert heading in md
    local, pred = report["measured"]["local"]["latency"], report["prediction"]
    for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"):
        assert f"| {local[key]:.3f} |" in md
    assert f"{local['throughput_img_per_s']:.1f}" in md
    assert "build machine (NOT the target)" in md and local["hardware"] in md and local["timed"] in md
    assert f"**{pred['latency_ms']:.3f} ms**" in md and pred["source"] in md
    assert "nvpmodel 15W, jetson_clocks on" in md
    assert report["spec_name"] in md and "**chosen**" in md
    sel = report["selection"]
    assert f"among the {sel['feasible']} of {sel['candidates']} candidate sizes" in md
    assert "| latency (p99) | <= 2 ms |" in md
    assert "93.12 %" in md and "41.25 %" in md  # accuracy after training and at init
    assert "1,234,567 bytes" in md and "3.2e-06" in md
    assert "| fp16 | float16-cast-io | 0.0041 | atol 0.01, rtol 0.01 | 99.60 % | ok |" in md
    for name in ("frontier", "latency", "training"):
        assert f"![{name}](plots/{name}.png)" in md
    rejected = [c for c in sel["frontier"] if not c["feasible"]]
    assert rejected and rejected[0]["reasons"][0] in md  # a rejected size says why


def test_markdown_verdict_table_marks_a_broken_budget_fail():
    report = make_report()
    report["budgets"]["memory"].update(value_mib=9999.0, ok=False)
    rejudge(report)
    md = render_markdown(report)
    assert md.splitlines()[0].endswith("— FAIL")
    assert "| memory | <= 512 MiB | 9999.0 MiB | — | predicted | analytic | FAIL |" in md
    assert "(failed checks: memory)" in md


def test_render_markdown_refuses_a_report_of_another_kind():
    report = make_report()
    report["kind"] = "device_report"
    with pytest.raises(InvalidInputError):
        render_markdown(report)


# --- plots --------------------------------------------------------------------------------------------


def test_plots_are_pngs_and_byte_identical_across_renders(tmp_path):
    (a, _), (b, _) = write_build(tmp_path, "a"), write_build(tmp_path, "b")
    for name in ("frontier", "latency", "training"):
        data = (a / "plots" / f"{name}.png").read_bytes()
        assert data == (b / "plots" / f"{name}.png").read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and img.size == PNG_SIZE
            assert "Software" not in img.info and "Creation Time" not in img.info


def test_plots_follow_the_report_data():
    report = make_report()
    tighter = make_report(latency_budget_ms=1.5)
    assert frontier_png(report) != frontier_png(tighter)
    other_samples = make_report(seed=1)
    assert latency_png(report) != latency_png(other_samples)


def test_plots_without_data_are_skipped_and_not_linked(tmp_path):
    report = make_report()
    report["training"] = {"scaler_phase": None, "dense_phase": None}
    report["latency_samples_ms"] = []
    assert training_png(report) is None and latency_png(report) is None
    paths = write_report_files(tmp_path, report)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "plots/frontier.png",
        "report.json",
        "report.md",
    ]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["frontier.png"]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "plots/frontier.png" in md and "plots/training.png" not in md
    assert json.loads((tmp_path / "report.json").read_text())["artifacts"]["plots"]["latency"] is None


# --- merging device_report.json ------------------------------------------------------------------------


def test_merge_device_latency_above_budget_turns_the_verdict_to_fail(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    assert report["verdict"] == "pass"
    budget = report["budgets"]["latency"]["budget_ms"]
    dev = write_device(tmp_path / "device_report.json", make_device_report(report, budget * 1.25))
    merged = merge_device_report(out, dev)
    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(merged))
    lat = on_disk["budgets"]["latency"]
    assert lat["source"] == "measured on device" and lat["value_ms"] == budget * 1.25 and lat["ok"] is False
    assert on_disk["verdict"] == "fail" and "latency" in on_disk["failed_budgets"]
    device_latency = on_disk["measured"]["device"]["latency"]
    assert set(device_latency) == set(LATENCY_KEYS)
    assert device_latency == json.loads(dev.read_text())["latency"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "on the device" in md and "— FAIL" in md.splitlines()[0]


def test_merge_device_latency_below_budget_passes_a_build_predicted_to_fail(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    report["prediction"]["latency_ms"] = 9.0  # as if the prediction had broken it (the evidence...)
    report["budgets"]["latency"].update(value_ms=9.0, ok=False)  # (...and the budget judged on it)
    rejudge(report)
    write_report_files(out, report)
    budget = report["budgets"]["latency"]["budget_ms"]
    dev = write_device(tmp_path / "device_report.json", make_device_report(report, budget * 0.8))
    merged = merge_device_report(out, dev)
    assert merged["verdict"] == "pass" and merged["failed_budgets"] == []
    assert merged["budgets"]["latency"]["value_ms"] == budget * 0.8


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"profile": "raspberry-pi-5"}, "raspberry-pi-5"),
        ({"kind": "build_report"}, "not a device report"),
        ({"latency": None, "passed": False, "error": "parity failed: 0.5 > 0.01"}, "parity failed"),
        ({"runtime": "onnxruntime"}, "onnxruntime"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_merge_refuses_a_mismatched_device_report_and_leaves_the_report(tmp_path, overrides, message):
    out, report = write_build(tmp_path, "jetson")
    before = (out / "report.json").read_bytes()
    dev = write_device(tmp_path / "device_report.json", make_device_report(report, 1.0, **overrides))
    with pytest.raises(InvalidInputError, match=message) as info:
        merge_device_report(out, dev)
    assert info.value.exit_code == EXIT_INVALID_INPUT
    assert (out / "report.json").read_bytes() == before


def test_merge_refuses_a_device_latency_at_another_batch(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    dev = make_device_report(report, 1.0)
    dev["latency"]["batch"] = 8
    with pytest.raises(InvalidInputError, match="--batch 1"):
        merge_device_report(out, write_device(tmp_path / "d.json", dev))


def test_markdown_lists_every_variants_top1_and_the_devices_own_after_a_merge(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| PyTorch fp32 | 93.12 % | 500 | — | — | — | ok |" in md
    assert "| ONNX fp16 (float16-cast-io) | 93.02 % | 500 | +0.10 | — | <= 1 | ok |" in md
    device = make_device_report(report, 1.0, accuracy={"top1": 0.9141, "n_images": 256, "source": "v.npz"})
    merged = merge_device_report(out, write_device(tmp_path / "d.json", device))
    assert merged["measured"]["device"]["accuracy"]["top1"] == 0.9141
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "top-1 91.41 % on 256 images of the bundle's labelled subset" in md


def test_markdown_says_when_the_model_input_size_differs_from_the_profiles(tmp_path):
    report = make_report()
    report["profile"]["input_size_px"] = 224
    report["spec"]["img_size"] = 28
    assert "28 px: differs from the profile's" in render_markdown(report)
    report["spec"]["img_size"] = 224
    assert "differs from the profile's" not in render_markdown(report)
