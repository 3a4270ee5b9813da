"""Device profiles: the shipped set, lookup, and one exit-3 line for every kind of bad profile file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.profiles import (
    DeviceProfile,
    apply_overrides,
    builtin_profiles_dir,
    list_profiles,
    load_profile,
)

REQUIRED = {
    "jetson-orin-nano-8gb",
    "jetson-orin-nx-16gb",
    "jetson-agx-orin-64gb",
    "raspberry-pi-5",
    "x86-cpu",
}
SHIPPED_FILES = sorted(builtin_profiles_dir().glob("*.yaml"))
GPU_FILES = [p for p in SHIPPED_FILES if yaml.safe_load(p.read_text())["hardware"]["accelerator"] == "gpu"]
JETSON_FILE = builtin_profiles_dir() / "jetson-orin-nano-8gb.yaml"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def jetson_data() -> dict:
    return yaml.safe_load(JETSON_FILE.read_text())


# --- the shipped profiles ---------------------------------------------------------------------------------


def test_every_shipped_profile_validates_through_the_cli():
    result = run("profiles", "validate", *map(str, SHIPPED_FILES))
    assert result.exit_code == 0, result.stderr
    for path in SHIPPED_FILES:
        assert f"ok  {path}" in result.stdout


def test_shipped_set_has_the_required_devices_and_a_datacenter_tensorrt_gpu():
    profiles = {p.name: p for p in list_profiles()}
    assert REQUIRED <= set(profiles)
    assert profiles["raspberry-pi-5"].software.runtime == "onnxruntime"
    assert profiles["x86-cpu"].software.runtime == "onnxruntime"
    assert "calibrat" in profiles["x86-cpu"].description
    datacenter = [
        p
        for p in profiles.values()
        if p.software.runtime == "tensorrt"
        and not p.name.startswith("jetson")
        and not p.hardware.unified_memory
    ]
    assert datacenter, "no datacenter GPU profile with TensorRT"
    assert all(not p.software.engine_built_on_device for p in datacenter)
    jetsons = [p for p in profiles.values() if p.name.startswith("jetson")]
    assert all(p.software.engine_built_on_device and p.hardware.power_mode is not None for p in jetsons)


def test_shipped_file_names_match_profile_names():
    for path in SHIPPED_FILES:
        assert load_profile(path).name == path.stem


def test_names_and_aliases_are_unique_across_shipped_profiles():
    keys = [key for p in list_profiles() for key in (p.name, *p.aliases)]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_lookup_by_name_alias_and_path_gives_the_same_profile(path: Path):
    by_path = load_profile(str(path))
    for key in (by_path.name, *by_path.aliases):
        found = load_profile(key)
        assert found == by_path
        assert Path(found.source_file).resolve() == path.resolve()


def test_jetson_alias_is_the_orin_nano():
    assert load_profile("jetson").name == "jetson-orin-nano-8gb"


def test_two_profiles_claiming_one_alias_is_an_error(tmp_path, monkeypatch):
    for name in ("a-board", "b-board"):
        data = jetson_data()
        data.update(name=name, aliases=["shared"])
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr("wave_deploy.profiles.builtin_profiles_dir", lambda: tmp_path)
    with pytest.raises(InvalidInputError, match="'shared' is already used by .*a-board.yaml"):
        list_profiles()


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.stem)
def test_gpu_fp32_peak_equals_cores_times_two_flop_times_clock(path: Path):
    hw = load_profile(path).hardware
    # Ampere and Ada SMs both hold 128 FP32 lanes; an FMA is 2 FLOP.
    derived_tflops = hw.gpu_sm_count * 128 * 2 * hw.gpu_clock_mhz * 1e6 / 1e12
    assert hw.peak_tflops_fp32 == pytest.approx(derived_tflops, rel=0.01)


def _deit_tiny_flop() -> float:
    """Naive count for DeiT-Tiny at 224 px: 12 blocks, width 192, 197 tokens, MLP ratio 4 (2 FLOP per MAC)."""
    depth, dim, tokens, patches, patch_in = 12, 192, 197, 196, 3 * 16 * 16
    per_block = 12 * tokens * dim * dim + 2 * tokens * tokens * dim  # qkv+proj+mlp GEMMs, q@k and attn@v
    return 2.0 * (depth * per_block + patches * patch_in * dim)


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_latency_budget_leaves_room_for_deit_tiny_at_peak_and_is_not_loose(path: Path):
    # The budget must be reachable by a DeiT-Tiny-class model (the time at 100 % of the device's peak is a
    # hard lower bound), and budgets are milliseconds, not seconds: none is looser than a second.
    profile = load_profile(path)
    peak = {
        "fp32": profile.hardware.peak_tflops_fp32,
        "fp16": profile.hardware.peak_tflops_fp16,
        "int8": profile.hardware.peak_tops_int8,
    }[profile.runtime.precision]
    lower_bound_ms = _deit_tiny_flop() * profile.budgets.latency_batch / (peak * 1e12) * 1e3
    assert lower_bound_ms < profile.budgets.latency_ms < 1000
    assert profile.runtime.input_size_px == 224


def test_list_shows_every_profile_with_its_budgets():
    result = run("profiles", "list")
    assert result.exit_code == 0, result.stderr
    for profile in list_profiles():
        assert profile.name in result.stdout
        assert f"{profile.budgets.latency_ms:g} ms {profile.budgets.latency_percentile}" in result.stdout
    for column in ("aliases", "accelerator", "runtime", "precision", "latency budget", "memory budget"):
        assert column in result.stdout


def test_list_json_has_at_least_six_profiles_matching_the_files():
    result = run("profiles", "list", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["profiles"]
    assert len(rows) >= 6
    assert {r["name"] for r in rows} == {p.stem for p in SHIPPED_FILES}
    nano = next(r for r in rows if r["name"] == "jetson-orin-nano-8gb")
    assert nano["aliases"][0] == "jetson" and nano["latency_budget_ms"] == 5.0 and nano["precision"] == "fp16"


@pytest.mark.parametrize("key", ["jetson", "jetson-orin-nano-8gb", str(JETSON_FILE)])
def test_show_json_is_the_full_profile_and_validates_back(key: str):
    result = run("profiles", "show", key, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert Path(data.pop("source_file")).resolve() == JETSON_FILE.resolve()
    assert DeviceProfile.model_validate(data).model_dump() == load_profile(JETSON_FILE).model_dump()


def test_show_prints_every_leaf_field():
    result = run("profiles", "show", "rpi5")
    assert result.exit_code == 0, result.stderr
    assert "raspberry-pi-5" in result.stdout
    for field in ("hardware.peak_tflops_fp32", "runtime.intra_op_threads", "budgets.latency_ms"):
        assert field in result.stdout


def test_show_unknown_name_exits_3_and_lists_known_profiles():
    result = run("profiles", "show", "jetsn")
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "unknown profile 'jetsn'" in result.stderr and "jetson-orin-nano-8gb" in result.stderr


# --- bad profiles: exit 3, one line naming the file and the field, no traceback -------------------------


def _mutated(change) -> str:
    data = jetson_data()
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def _rename_latency_unit(d: dict) -> None:
    d["budgets"]["latency_s"] = d["budgets"].pop("latency_ms")


BAD_PROFILES = {
    # case: (file text or None for a directory, words the single error line must contain)
    "missing_field": (_mutated(lambda d: d["budgets"].pop("latency_ms")), ["budgets.latency_ms", "missing"]),
    "wrong_unit": (
        _mutated(_rename_latency_unit),
        ["budgets.latency_s", "unknown key", "did you mean 'latency_ms'"],
    ),
    "unknown_key": (
        _mutated(lambda d: d["hardware"].update(tdp_watts=15)),
        ["hardware.tdp_watts", "unknown key"],
    ),
    "negative_budget": (
        _mutated(lambda d: d["budgets"].update(memory_mib=-512)),
        ["budgets.memory_mib", "greater than 0", "-512"],
    ),
    "unknown_precision": (
        _mutated(lambda d: d["runtime"].update(precision="bf16")),
        ["runtime.precision", "'fp32', 'fp16' or 'int8'", "'bf16'"],
    ),
    "unquoted_version": (
        _mutated(lambda d: d["software"].update(tensorrt_version=10.3)),
        ["software.tensorrt_version", "quote"],
    ),
    "batch_order": (
        _mutated(lambda d: d["runtime"].update(batch_min=4, batch_opt=2)),
        ["field 'runtime'", "batch_min <= batch_opt"],
    ),
    "gpu_without_sm_count": (
        _mutated(lambda d: d["hardware"].pop("gpu_sm_count")),
        ["field 'hardware'", "gpu_sm_count"],
    ),
    "yaml_syntax_error": ("name: jetson\nbudgets: {latency_ms: 5.0\n", ["YAML syntax error", "line 3"]),
    "duplicate_key": (
        JETSON_FILE.read_text().replace("  latency_ms: 5.0\n", "  latency_ms: 5.0\n  latency_ms: 50.0\n"),
        ["duplicate key 'latency_ms'"],
    ),
    "top_level_list": ("- name: jetson\n", ["expected a mapping", "list"]),
    "empty_file": ("", ["file is empty"]),
    "comments_only": ("# nothing here\n", ["file is empty"]),
    "directory": (None, ["is a directory"]),
}


@pytest.mark.parametrize("command", ["validate", "show"])
@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile_exits_3_with_one_line_naming_file_and_field(tmp_path, case: str, command: str):
    text, expected = BAD_PROFILES[case]
    path = tmp_path / "profile.yaml"
    if text is None:
        path.mkdir()
    else:
        path.write_text(text)
    result = run("profiles", command, str(path))
    assert result.exit_code == 3, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0]
    for words in expected:
        assert words in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_stops_at_the_first_bad_file(tmp_path):
    first_bad, second_bad = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first_bad.write_text("")
    second_bad.write_text("name: [\n")
    result = run("profiles", "validate", str(JETSON_FILE), str(first_bad), str(second_bad))
    assert result.exit_code == 3
    assert f"ok  {JETSON_FILE}" in result.stdout
    assert str(first_bad) in result.stderr and str(second_bad) not in result.stderr


def test_validate_json_reports_each_file_and_the_failure(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_mutated(lambda d: d["runtime"].update(precision="fp8")))
    ok = run("profiles", "validate", "--json", *map(str, SHIPPED_FILES))
    assert ok.exit_code == 0
    assert json.loads(ok.stdout) == {
        "valid": True,
        "files": [{"path": str(p), "valid": True, "name": p.stem} for p in SHIPPED_FILES],
    }
    failed = run("profiles", "validate", "--json", str(JETSON_FILE), str(bad))
    assert failed.exit_code == 3
    report = json.loads(failed.stdout)
    assert report["valid"] is False
    assert [f["valid"] for f in report["files"]] == [True, False]
    assert "runtime.precision" in report["files"][1]["error"]


def test_validate_missing_file_exits_3(tmp_path):
    result = run("profiles", "validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 3
    assert "does not exist" in result.stderr


# --- `--set SECTION.FIELD=VALUE` overrides ---------------------------------------------------------------


def test_set_overrides_change_only_the_named_fields_and_are_recorded():
    base = load_profile("jetson")
    changed = apply_overrides(
        base, ["budgets.latency_ms=0.5", "budgets.min_accuracy=null", "runtime.precision=fp32"]
    )
    assert changed.budgets.latency_ms == 0.5 and isinstance(changed.budgets.latency_ms, float)
    assert changed.budgets.min_accuracy is None and changed.runtime.precision == "fp32"
    assert changed.overrides == (
        "budgets.latency_ms=0.5",
        "budgets.min_accuracy=null",
        "runtime.precision=fp32",
    )
    assert changed.source_file == base.source_file
    untouched = {"budgets": {"latency_ms", "min_accuracy"}, "runtime": {"precision"}}
    assert changed.model_dump(exclude=untouched) == base.model_dump(exclude=untouched)
    assert base.budgets.latency_ms != 0.5 and base.overrides == ()  # the loaded profile is not modified
    assert apply_overrides(base, []) is base


@pytest.mark.parametrize(
    "setting, error, match",
    [
        ("budgets.latency_msx=1", InvalidInputError, r"field 'budgets.latency_msx': unknown key"),
        ("budgets.latency_ms=-1", InvalidInputError, r"field 'budgets.latency_ms': .*greater than 0"),
        ("budgets.latency_ms=fast", InvalidInputError, r"field 'budgets.latency_ms'"),
        ("budgets.latency_ms.p99=1", InvalidInputError, r"'latency_ms' is a value, not a section"),
        ("budgets.latency_ms", UsageError, r"expected SECTION.FIELD=VALUE"),
        ("=1", UsageError, r"expected SECTION.FIELD=VALUE"),
        ("budgets.latency_ms=[1", InvalidInputError, r"not valid YAML"),
        ("name=my-device", UsageError, r"name and aliases identify the profile"),
        ("aliases=[x]", UsageError, r"name and aliases identify the profile"),
    ],
)
def test_bad_set_overrides_are_refused_with_their_error(setting, error, match):
    with pytest.raises(error, match=match) as info:
        apply_overrides(load_profile("x86-cpu"), [setting])
    assert type(info.value) is error


def test_set_with_a_misspelt_field_suggests_the_right_one_through_the_cli():
    result = CliRunner().invoke(cli, ["plan", "--profile", "jetson", "--set", "budgets.memory_mb=100"])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "with --set budgets.memory_mb=100" in lines[0] and "memory_mib" in lines[0]
    assert CliRunner().invoke(cli, ["plan", "--profile", "jetson", "--set", "budgets"]).exit_code == 2


def test_set_keeps_version_text_and_takes_a_relative_calibration_file_from_the_current_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    jetson = apply_overrides(load_profile("jetson"), ["software.tensorrt_version=10.10"])
    assert jetson.software.tensorrt_version == "10.10"  # YAML alone would read the number 10.1
    x86 = apply_overrides(
        load_profile("x86-cpu"), ["latency_model.kind=calibrated", "latency_model.calibration_file=cal.json"]
    )
    assert x86.latency_model.calibration_file == str(tmp_path / "cal.json")
    assert apply_overrides(load_profile("x86-cpu"), ["budgets.latency_ms=2"]).budgets.latency_ms == 2.0


def test_profiles_show_applies_set_and_says_so():
    args = ["profiles", "show", "jetson", "--set", "budgets.memory_mib=300"]
    shown = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert shown["budgets"]["memory_mib"] == 300 and shown["overrides"] == ["budgets.memory_mib=300"]
    assert "overrides" not in json.loads(
        CliRunner().invoke(cli, ["profiles", "show", "jetson", "--json"]).stdout
    )
    text = CliRunner().invoke(cli, args).output
    assert "set for this run: budgets.memory_mib=300" in text


@pytest.mark.parametrize(
    "content, expect",
    [
        (None, "does not exist"),
        ("", "invalid calibration file"),
        ("{}", "invalid calibration file"),
        ("OTHER", "made for profile 'x86-cpu', not 'calibrated-cpu'"),
        ("OWN", None),
    ],
    ids=["missing", "empty", "empty-object", "another-profile", "valid"],
)
def test_profiles_validate_reads_a_calibrated_profiles_file_exactly_as_plan_does(tmp_path, content, expect):
    from test_latency import _calibration_dict

    data = yaml.safe_load((builtin_profiles_dir() / "x86-cpu.yaml").read_text())
    data.update(name="calibrated-cpu", aliases=[])
    data["latency_model"].update(kind="calibrated", calibration_file="cal.json")
    profile = tmp_path / "calibrated.yaml"
    profile.write_text(yaml.safe_dump(data))
    if content in ("OWN", "OTHER"):
        cal = _calibration_dict()
        cal["profile"] = "calibrated-cpu" if content == "OWN" else "x86-cpu"
        content = json.dumps(cal)
    if content is not None:
        (tmp_path / "cal.json").write_text(content)
    validate = CliRunner().invoke(cli, ["profiles", "validate", str(profile)])
    plan = CliRunner().invoke(cli, ["plan", "--profile", str(profile), "--json"])
    if expect is None:
        assert validate.exit_code == 0 and plan.exit_code == 0, (validate.output, plan.output)
        return
    assert validate.exit_code == plan.exit_code == 3
    assert validate.stderr.splitlines() == plan.stderr.splitlines()  # the same one line
    assert len(validate.stderr.splitlines()) == 1 and expect in validate.stderr
    assert str(tmp_path / "cal.json") in validate.stderr


@pytest.mark.parametrize(
    "setting, expect",
    [
        ("budgets.latency_ms=true", "not a boolean"),
        ("budgets.latency_ms=false", "not a boolean"),
        ("hardware.cpu_cores=true", "not a boolean"),
        ("hardware.gpu_sm_count=true", "not a boolean"),  # int | None
        ("runtime.max_accuracy_drop_points=-1", "greater than or equal to 0"),
        ("runtime.max_accuracy_drop_points=-0.001", "greater than or equal to 0"),
        ("budgets.latency_ms=" + "1" * 4301, "4,301 digits"),
        ("hardware.cpu_cores=" + "1" * 17, "larger than 9,007,199,254,740,992"),
    ],
)
def test_set_refuses_booleans_as_numbers_negative_drops_and_overlong_integers(setting, expect):
    with pytest.raises(InvalidInputError, match=expect) as caught:
        apply_overrides(load_profile("jetson"), [setting])
    assert len(caught.value.one_line()) < 400  # a 4,301-digit value is not echoed whole


def test_booleans_stay_booleans_and_a_zero_drop_is_allowed():
    profile = apply_overrides(
        load_profile("jetson"), ["hardware.unified_memory=false", "runtime.max_accuracy_drop_points=0"]
    )
    assert profile.hardware.unified_memory is False and profile.runtime.max_accuracy_drop_points == 0
