"""Reports: report.md, deterministic plots, merging device_report.json, the offline HTML index, the CLI."""

from __future__ import annotations

import base64
import copy
import io
import json
import random
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from wave_deploy.bench.stats import LATENCY_KEYS, TIMED_COMPUTE, TIMED_HOST_TO_HOST, summarize
from wave_deploy.cli.main import cli
from wave_deploy.errors import EXIT_BUDGET_BROKEN, EXIT_INVALID_INPUT, EXIT_USAGE, InvalidInputError
from wave_deploy.plots import DPI, FIGSIZE_IN, frontier_png, latency_png, training_png
from wave_deploy.profiles import load_profile
from wave_deploy.reports import (
    budget_verdict,
    merge_device_report,
    render_index,
    render_markdown,
    write_report_files,
)
from wave_deploy.selection import DEFAULT_SEARCH_SPACE, select
from wave_deploy.spec import macs

PNG_SIZE = (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))


def _candidate(c) -> dict:
    return {"depth": c.spec.depth, "embed_dim": c.spec.embed_dim, "num_heads": c.spec.num_heads,
            "flops": c.flops, "params": c.params, "latency_ms": c.latency_at_budget_ms,
            "memory_mib": c.memory.total_mib, "feasible": c.feasible, "reasons": list(c.reasons)}  # fmt: skip


def _curve(steps: int, loss0: float, acc0: float, acc1: float) -> list[dict]:
    pts = range(0, steps + 1, max(1, steps // 10))
    return [{"step": s, "train_loss": loss0 * (1 - 0.8 * s / steps),
             "val_acc": acc0 + (acc1 - acc0) * s / steps} for s in pts]  # fmt: skip


def make_report(profile_name: str = "jetson", latency_budget_ms: float = 2.0, seed: int = 0) -> dict:
    """A schema-complete report (docs/report-schema.md) from a real selection over the default search space
    (with a tightened latency budget so that the frontier has rejected sizes) and real latency statistics."""
    profile = load_profile(profile_name)
    budgets = profile.budgets.model_copy(update={"latency_ms": latency_budget_ms})
    profile = profile.model_copy(update={"budgets": budgets})
    sel = select(profile, DEFAULT_SEARCH_SPACE)
    c, pct = sel.chosen, budgets.latency_percentile
    rng = random.Random(seed)
    samples = [0.8 + rng.expovariate(8.0) for _ in range(300)]
    local = summarize(samples, batch=budgets.latency_batch, warmup=20, timed=TIMED_HOST_TO_HOST,
                      runtime="onnxruntime 1.20.0 [CPUExecutionProvider]",
                      hardware="Test CPU (2 logical cores)", threads=2).to_dict()  # fmt: skip
    report_budgets = {
        "latency": {"budget_ms": latency_budget_ms, "percentile": pct, "value_ms": c.latency_at_budget_ms,
                    "source": "predicted", "ok": c.latency_at_budget_ms <= latency_budget_ms},
        "memory": {"budget_mib": budgets.memory_mib, "value_mib": c.memory.total_mib, "source": "predicted",
                   "ok": c.memory.total_mib <= budgets.memory_mib},
        "build_memory": None,
        "accuracy": {"min": 0.5, "value": 0.9312, "ok": True},
    }  # fmt: skip
    verdict, failed = budget_verdict(report_budgets)
    hw = profile.hardware
    return {
        "schema_version": 1,
        "kind": "build_report",
        "created": "2025-01-02T03:04:05Z",
        "profile": {
            "name": profile.name,
            "description": profile.description,
            "device_name": hw.device_name,
            "accelerator": hw.accelerator,
            "runtime": profile.software.runtime,
            "precision": profile.runtime.precision,
            "engine_built_on_device": profile.software.engine_built_on_device,
            "input_size_px": profile.runtime.input_size_px,
            "power_mode": hw.power_mode.model_dump() if hw.power_mode else None,
        },
        "spec": c.spec.to_dict(),
        "spec_name": c.spec.name,
        "costs": {"params": c.params, "macs": macs(c.spec), "flops": c.flops, "weight_bytes": 4 * c.params},
        "selection": {
            "objective": sel.objective,
            "search_space": DEFAULT_SEARCH_SPACE.to_dict(),
            "chosen": _candidate(c),
            "frontier": [_candidate(f) for f in sel.frontier],
            "candidates": len(sel.candidates),
            "feasible": sum(x.feasible for x in sel.candidates),
        },
        "prediction": {
            "latency_ms": c.latency_at_budget_ms,
            "percentile": pct,
            "batch": budgets.latency_batch,
            "source": c.latency.source,
            "memory_mib": c.memory.total_mib,
            "build_memory_mib": c.memory.build_peak_mib,
        },
        "measured": {
            "local": {**local, "what": "model.onnx on this build machine (not the target)"},
            "device": None,
        },
        "latency_samples_ms": samples,
        "accuracy": {
            "val_acc": 0.9312,
            "val_acc_at_init": 0.4125,
            "dataset": "mnist-5k (500 val)",
            "onnx_top1_agreement": 1.0,
        },
        "training": {
            "scaler_phase": {"steps": 200, "curve": _curve(200, 2.3, 0.41, 0.62)},
            "dense_phase": {"steps": 600, "curve": _curve(600, 1.2, 0.62, 0.9312)},
        },
        "parity": {
            "onnx_fp32_max_abs_err": 3.2e-06,
            "variants": {
                "fp16": {
                    "precision": "fp16",
                    "method": "float16-cast-io",
                    "path": "model.fp16.onnx",
                    "sha256": "ab" * 32,
                    "size_bytes": 650000,
                    "tolerance": {"atol": 0.01, "rtol": 0.01},
                    "max_abs_err": 0.0041,
                    "top1_agreement": 0.996,
                    "n_validation": 256,
                    "passed": True,
                }
            },  # the keys of exporters.onnx.VariantResult
        },
        "sizes": {"checkpoint_bytes": 1234567, "onnx_bytes": 1300000, "bundle_bytes": 2600000},
        "budgets": report_budgets,
        "verdict": verdict,
        "failed_budgets": failed,
        "artifacts": {
            "checkpoint": "model.safetensors",
            "onnx": "model.onnx",
            "bundle": "bundle/",
            "engine": None,
            "report_md": "report.md",
            "plots": {},
        },
    }


def make_device_report(report: dict, at_budget_ms: float, **overrides) -> dict:
    """device_report.json as export/run_on_device.py writes it, with the budget's percentile at a value."""
    pct = report["budgets"]["latency"]["percentile"]
    samples = [at_budget_ms * f for f in (0.90, 0.92, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.0)]
    stats = summarize(samples, batch=report["prediction"]["batch"], warmup=20, timed=TIMED_COMPUTE,
                      runtime="TensorRT 10.3.0", hardware="Orin (nvgpu)", threads=None).to_dict()  # fmt: skip
    stats[f"{pct}_ms"] = at_budget_ms  # exactly at the value the test wants judged
    dev = {
        "schema_version": 1, "kind": "device_report", "passed": True, "profile": report["profile"]["name"],
        "power_mode": "NV Power Mode: 15W 0", "batch": stats["batch"], "runtime": report["profile"]["runtime"],
        "runtime_version": "10.3.0", "precision": report["profile"]["precision"],
        "parity": {"batches": [], "max_abs_err": 0.0031, "passed": True}, "latency": stats,
        "hardware": "Orin (nvgpu)",
    }  # fmt: skip
    dev.update(overrides)
    return dev


def write_build(tmp_path: Path, name: str, **kwargs) -> tuple[Path, dict]:
    out = tmp_path / name
    report = make_report(**kwargs)
    write_report_files(out, report)
    return out, report


def write_device(path: Path, dev: dict) -> Path:
    path.write_text(json.dumps(dev), encoding="utf-8")
    return path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --- report.md --------------------------------------------------------------------------------------------


def test_markdown_has_every_section_and_the_reports_numbers(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Device", "## Budget verdict", "## Chosen model", "## Latency", "## Memory",
                    "## Accuracy", "## Parity", "## Sizes", "## Plots", "## Artifacts"):  # fmt: skip
        assert heading in md
    local, pred = report["measured"]["local"], report["prediction"]
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
    report["verdict"], report["failed_budgets"] = budget_verdict(report["budgets"])
    md = render_markdown(report)
    assert md.splitlines()[0].endswith("— FAIL")
    assert "| memory | <= 512 MiB | 9999.0 MiB | predicted | FAIL |" in md
    assert "(broken budgets: memory)" in md


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
    assert {k: on_disk["measured"]["device"][k] for k in LATENCY_KEYS} == json.loads(dev.read_text())[
        "latency"
    ]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "on the device" in md and "— FAIL" in md.splitlines()[0]


def test_merge_device_latency_below_budget_passes_a_build_predicted_to_fail(tmp_path):
    out, report = write_build(tmp_path, "jetson")
    report["budgets"]["latency"].update(value_ms=9.0, ok=False)  # as if the prediction had broken it
    report["verdict"], report["failed_budgets"] = budget_verdict(report["budgets"])
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


def test_cli_device_report_needs_exactly_one_dir(tmp_path):
    a, report = write_build(tmp_path, "a")
    b, _ = write_build(tmp_path, "b")
    dev = write_device(tmp_path / "d.json", make_device_report(report, 1.0))
    result = run("report", str(a), str(b), "--device-report", str(dev))
    assert result.exit_code == EXIT_USAGE


def test_budget_verdict_lists_broken_budgets_in_a_fixed_order():
    budgets = copy.deepcopy(make_report()["budgets"])
    budgets["accuracy"]["ok"] = False
    budgets["latency"]["ok"] = False
    assert budget_verdict(budgets) == ("fail", ["latency", "accuracy"])
    budgets["accuracy"]["ok"] = budgets["latency"]["ok"] = True
    assert budget_verdict(budgets) == ("pass", [])


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
