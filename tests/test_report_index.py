"""The offline HTML index over many device outputs and the `wave-deploy report` command."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from _report_data import (
    PNG_SIZE,
    make_device_report,
    make_report,
    rejudge,
    run,
    write_build,
    write_device,
)
from PIL import Image

from wave_deploy.errors import EXIT_BUDGET_BROKEN, EXIT_INVALID_INPUT, EXIT_USAGE
from wave_deploy.reports import (
    render_index,
    write_report_files,
)
from wave_deploy.reports.merge import merge_device_report

# --- the HTML index -----------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "action")]


def test_index_html_is_offline_and_embeds_every_devices_plots(tmp_path):
    jetson, _ = write_build(tmp_path, "jetson")
    pi, pi_report = write_build(tmp_path, "pi", profile_name="raspberry-pi-5", latency_budget_ms=40.0)
    page = render_index([jetson, pi], out_path=tmp_path / "index.html")
    parser = _Refs()
    parser.feed(page)
    assert "jetson-orin-nano-8gb" in page and "raspberry-pi-5" in page and pi_report["spec_name"] in page
    assert "script" not in parser.tags and "link" not in parser.tags
    images = [v for tag, k, v in parser.refs if tag == "img" and k == "src"]
    assert len(images) == 6
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
            assert img.size == PNG_SIZE
    for _, _, value in parser.refs:
        assert not value.lower().startswith(("http:", "https:", "//")), value
    assert "url(" not in page and "@import" not in page
    hrefs = {v for tag, k, v in parser.refs if k == "href"}
    assert {"#dev-jetson-orin-nano-8gb", "#dev-raspberry-pi-5", "jetson/report.md", "pi/report.md"} <= hrefs


def test_index_escapes_text_from_reports(tmp_path):
    report = make_report()
    report["profile"]["device_name"] = "Orin <script>alert(1)</script>"
    write_report_files(tmp_path / "d", report)
    page = render_index([tmp_path / "d"])
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_index_shows_device_measured_ratio_after_merge(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    measured = report["prediction"]["latency_ms"] / 2
    merge_device_report(out, write_device(tmp_path / "d.json", make_device_report(report, measured)))
    result = run("report", str(out), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["devices"][0]
    assert row["device_at_percentile_ms"] == measured
    assert row["predicted_over_measured"] == pytest.approx(2.0)
    assert "2.00" in render_index([out])


# --- the CLI ------------------------------------------------------------------------------------------


def test_cli_report_of_a_missing_dir_exits_3_naming_it(tmp_path):
    good, _ = write_build(tmp_path, "jetson")
    result = run("report", str(good), str(tmp_path / "nope"))
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "nope" in result.output


def test_cli_report_of_an_invalid_report_json_exits_3(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "report.json").write_text('{"schema_version": 1, "kind": "build_report"}', encoding="utf-8")
    result = run("report", str(bad))
    assert result.exit_code == EXIT_INVALID_INPUT and "bad" in result.output


def test_cli_report_exits_0_on_a_failed_verdict_and_8_with_fail_on_budget(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    budget = report["budgets"]["latency"]["budget_ms"]
    device_file = write_device(tmp_path / "d.json", make_device_report(report, budget * 2))
    merged = run("report", str(out), "--device-report", str(device_file), "--json")
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.stdout)["failed"] == ["jetson-orin-nano-8gb"]
    assert run("report", str(out)).exit_code == 0
    result = run("report", str(out), "--fail-on-budget")
    assert result.exit_code == EXIT_BUDGET_BROKEN and "jetson-orin-nano-8gb" in result.output


def test_cli_report_passes_fail_on_budget_when_every_verdict_passes(tmp_path):
    out, _ = write_build(tmp_path, "jetson")
    assert run("report", str(out), "--fail-on-budget").exit_code == 0


def test_cli_report_expands_a_parent_dir_and_writes_the_html(tmp_path):
    write_build(tmp_path / "artifacts", "jetson")
    write_build(tmp_path / "artifacts", "pi", profile_name="raspberry-pi-5", latency_budget_ms=40.0)
    html_path = tmp_path / "site" / "index.html"
    result = run("report", str(tmp_path / "artifacts"), "--html", str(html_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["profile"] for d in data["devices"]] == ["jetson-orin-nano-8gb", "raspberry-pi-5"]
    page = html_path.read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') == 6
    assert 'href="../artifacts/jetson/report.md"' in page


@pytest.mark.parametrize("also_gone", [(), ("manifest.json",), ("manifest.json", "report.md")])
def test_a_profile_whose_report_json_was_deleted_fails_the_gate_in_the_folder_and_the_glob_form(
    tmp_path, also_gone
):
    art = tmp_path / "artifacts"
    write_build(art, "x86-cpu", profile_name="x86-cpu", latency_budget_ms=1000.0)
    bad, report = write_build(art, "jetson")
    budget = report["budgets"]["latency"]["budget_ms"]
    merge_device_report(bad, write_device(tmp_path / "d.json", make_device_report(report, 3 * budget)))
    (art / ".models").mkdir()  # the build's hidden model cache: not a device output directory
    (art / "notes").mkdir()  # a folder holding nothing a build writes
    (art / "index.html").write_text("<html></html>", encoding="utf-8")
    assert run("report", str(art), "--fail-on-budget").exit_code == EXIT_BUDGET_BROKEN
    for name in ("report.json", *also_gone):
        (bad / name).unlink()  # the failing profile's report removed from the cached artifacts
    for form in ([str(art)], [str(art / "x86-cpu"), str(bad)]):
        result = run("report", *form, "--fail-on-budget")
        assert result.exit_code == EXIT_INVALID_INPUT, (form, result.output)
        assert str(bad / "report.json") in result.stderr
    assert run("report", str(art / "x86-cpu"), "--fail-on-budget").exit_code == 0  # alone, it passes


def test_cli_device_report_needs_exactly_one_dir(tmp_path):
    a, report = write_build(tmp_path, "a")
    b, _ = write_build(tmp_path, "b")
    dev = write_device(tmp_path / "d.json", make_device_report(report, 1.0))
    result = run("report", str(a), str(b), "--device-report", str(dev))
    assert result.exit_code == EXIT_USAGE


def test_judge_lists_broken_budgets_in_a_fixed_order():
    report = make_report()
    report["budgets"]["accuracy"]["value"] = 0.1  # below the minimum 0.5, and chance for 10 classes
    report["budgets"]["latency"]["value_ms"] = 1e3
    failed = rejudge(report)["failed_budgets"]
    assert failed == ["latency", "accuracy", "accuracy_floor"] and report["verdict"] == "fail"
    report["budgets"]["accuracy"]["value"] = 0.9
    report["budgets"]["latency"]["value_ms"] = 0.1
    assert rejudge(report)["failed_budgets"] == [] and report["verdict"] == "pass"


def test_cli_report_imports_no_heavy_package(tmp_path):
    """`wave-deploy report` reads JSON and PNGs: it must stay fast on a CI runner without torch loaded."""
    out, _ = write_build(tmp_path, "jetson")
    heavy = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "tensorrt")
    code = (
        "import sys\n"
        "from wave_deploy.cli.main import cli\n"
        "try:\n"
        "    cli.main(args=sys.argv[1:], prog_name='wave-deploy', standalone_mode=False)\n"
        "finally:\n"
        f"    print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    argv = ["report", str(out), "--json", "--html", str(tmp_path / "index.html")]
    cmd = [sys.executable, "-c", code, *argv]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="


def test_accuracy_at_chance_breaks_the_default_floor_and_the_floor_can_be_turned_off():
    from wave_deploy.reports.judge import Limits, Observed, judge_budgets

    limits = Limits(latency_ms=10, latency_percentile="p50", latency_batch=1, memory_mib=100,
                    min_accuracy_over_chance=1.5)  # fmt: skip
    at = Observed(latency_ms=1, memory_mib=1, accuracy=0.34, num_classes=3)  # 33% is chance on 3 classes
    judged = judge_budgets(limits, at)
    assert judged.failed == ["accuracy_floor"] and "near chance" in judged.reasons[0]
    assert judged.checks["accuracy_floor"]["min"] == 0.5
    assert judge_budgets(limits, Observed(latency_ms=1, memory_mib=1, accuracy=0.51, num_classes=3)).ok
    off = Limits(latency_ms=10, latency_percentile="p50", latency_batch=1, memory_mib=100)
    assert judge_budgets(off, at).ok and judge_budgets(off, at).checks["accuracy_floor"] is None
