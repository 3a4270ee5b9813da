"""report.json, device_report.json and the calibration file have typed, versioned schemas: the docs are
generated from the models, real reports validate against the generated JSON Schema, and readers refuse
files that do not."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from _report_data import make_device_report, make_report, write_build

from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError, NoFeasibleModelError
from wave_deploy.profiles import load_profile
from wave_deploy.reports import load_report, write_failure_report
from wave_deploy.reports.assemble import profile_section
from wave_deploy.reports.files import failure_of
from wave_deploy.reports.schema import BuildReport, DeviceReport, parse_device_report, schema_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "report-schema.md"


def test_the_schema_doc_is_generated_from_the_models():
    assert DOC.read_text(encoding="utf-8") == schema_markdown(), (
        "docs/report-schema.md is stale: python -m wave_deploy.reports > docs/report-schema.md"
    )


def test_a_built_report_and_a_failure_report_validate_against_the_generated_json_schema(tmp_path):
    schema = BuildReport.model_json_schema()
    out, _ = write_build(tmp_path, "jetson")
    jsonschema.validate(json.loads((out / "report.json").read_text()), schema)
    failed = tmp_path / "failed"
    error = NoFeasibleModelError("no ViT size fits")
    write_failure_report(failed, profile_section(load_profile("jetson")), failure_of("plan", error))
    on_disk = json.loads((failed / "report.json").read_text())
    jsonschema.validate(on_disk, schema)
    assert on_disk["failure"] == {"stage": "plan", "exit_code": 5, "error": "NoFeasibleModelError",
                                  "message": "no ViT size fits"}  # fmt: skip


def test_a_device_report_validates_against_its_generated_schema():
    device = make_device_report(make_report(), 1.0)
    jsonschema.validate(device, DeviceReport.model_json_schema())
    assert parse_device_report(device, "d.json").latency.batch == device["latency"]["batch"]


@pytest.mark.parametrize(
    "edit, field, in_json_schema",
    [
        (lambda r: r["budgets"]["latency"].update(ok="yes"), "budgets.latency.ok", True),
        (lambda r: r["budgets"]["memory"].update(value_mib="12"), "budgets.memory.value_mib", True),
        (lambda r: r.update(verdict="maybe"), "verdict", True),
        (lambda r: r.update(surprise=1), "surprise", True),
        (lambda r: r["measured"].update(device={"p50_ms": 1.0}), "measured.device", True),
        # cross-field rules live in the model only (JSON Schema cannot say them)
        (lambda r: r.update(spec=None), "needs budgets, spec and prediction", False),
        (lambda r: r.update(failed_budgets=["memory"]), "verdict must be 'fail' exactly when", False),
    ],
)
def test_a_report_that_breaks_the_schema_is_exit_3_naming_the_field(tmp_path, edit, field, in_json_schema):
    out, report = write_build(tmp_path, "jetson")
    edit(report)
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(InvalidInputError, match=field.replace(".", r"\.")) as info:
        load_report(out)
    assert info.value.exit_code == EXIT_INVALID_INPUT
    if in_json_schema:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(report, BuildReport.model_json_schema())


def test_every_latency_block_is_the_one_latency_stats_definition():
    """The benchmark, the on-device kit and the report schema share export/kit_stats.py's LatencyStats: the
    schema's latency fields validate into it, the benchmark returns it and the kit writes its to_dict()."""
    import typing

    from wave_deploy._kit import kit_stats

    from wave_deploy.bench import stats
    from wave_deploy.reports.schema import DeviceMeasurement, DeviceReport, LocalMeasurement

    assert stats.LatencyStats is kit_stats.LatencyStats and stats.LATENCY_KEYS == kit_stats.LATENCY_KEYS

    def types_in(annotation) -> set:
        return {annotation, *(t for arg in typing.get_args(annotation) for t in types_in(arg))}

    for model in (DeviceMeasurement, LocalMeasurement, DeviceReport):
        assert kit_stats.LatencyStats in types_in(model.model_fields["latency"].annotation), model
    samples = [1.0, 2.0, 3.0, 10.0]
    made = stats.summarize(samples, batch=2, warmup=1, timed=stats.TIMED_COMPUTE, runtime="r", hardware="h",
                           threads=None)  # fmt: skip
    kit = kit_stats.summarize(samples, batch=2, warmup=1, timed=stats.TIMED_COMPUTE, runtime="r", hardware="h",
                              threads=None)  # fmt: skip
    assert made == kit
    block = {"schema_version": 1, "kind": "device_report", "passed": True, "latency": made.to_dict()}
    assert DeviceReport.model_validate(block).latency == made  # the JSON block validates into the dataclass
