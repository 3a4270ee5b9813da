"""`wave-deploy export` and the on-device bundle: the kit runs standalone and gates on parity."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_mnist import SPEC, builtin_data, trained_state
from click.testing import CliRunner
from wave_deploy._kit.kit_accuracy import normalize_uint8

from wave_deploy.bench.stats import LATENCY_KEYS
from wave_deploy.cli.main import cli
from wave_deploy.exporters.bundle import KIT_FILES
from wave_deploy.exporters.quantize import ort_logits
from wave_deploy.fileio import sha256_file
from wave_deploy.training.folding import save_folded

KIT_DIR = Path(__file__).resolve().parents[1] / "export"
# Runs a kit script with torch, timm and wave_deploy made unimportable: the kit must not need them.
GUARD = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "wave_deploy", "torchvision"):
            raise ImportError(f"the on-device kit imported {name}")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _checkpoint_path(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def x86_export(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("x86")
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(checkpoint),
            "--profile",
            "x86-cpu",
            "--out",
            str(out),
            "--exporter",
            "legacy",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def jetson_export(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("jetson")
    result = CliRunner().invoke(
        cli, ["export", str(checkpoint), "--profile", "jetson", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def run_kit(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    guard = bundle.parent / "guard.py"
    guard.write_text(GUARD)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(bundle.parent), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-I", str(guard), "run_on_device.py", *args]
    return subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_kit_sources_import_only_the_standard_library_numpy_and_runtimes():
    siblings = {
        "kit_common",
        "kit_stats",
        "kit_accuracy",
        "kit_memory",
        "trt_device",
        "kit_calibrate",
        "kit_design",
    }
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "tensorrt"} | siblings
    for path in KIT_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_export_for_jetson_writes_parity_checked_onnx_fp16_variant_and_a_bundle(jetson_export):
    out, summary = jetson_export
    assert summary["profile"] == "jetson-orin-nano-8gb" and summary["spec"] == SPEC.to_dict()
    assert summary["onnx"]["parity"]["passed"] and summary["onnx"]["parity"]["max_abs_err"] <= 1e-4
    fp16, int8 = summary["onnx"]["variants"]
    assert (
        fp16["precision"] == "fp16"
        and fp16["chosen"]
        and fp16["passed"]
        and (out / "model.fp16.onnx").is_file()
    )
    assert int8["precision"] == "int8" and not int8["chosen"] and int8["method"] == "static-qdq"
    assert summary["onnx"]["accuracy"]["n_images"] == 500  # the built-in data by default
    assert summary["onnxruntime"] == {
        "target": False,
        "reason": "not an ONNX Runtime target (runtime tensorrt)",
    }
    trt = summary["tensorrt"]
    assert trt["target"] and trt["plan"]["path"] == "flags" and "--fp16" in trt["trtexec"]
    assert trt["bundle"] == str(out / "bundle") and "built on the device" in trt["bundle_reason"]
    assert json.loads((out / "export.json").read_text()) == summary


def test_bundle_holds_model_plan_references_kit_and_the_exact_trtexec_line(jetson_export):
    out, _ = jetson_export
    bundle = out / "bundle"
    plan = json.loads((bundle / "plan.json").read_text())
    assert (
        plan["sha256"]["model.onnx"] == sha256_file(bundle / "model.onnx") == sha256_file(out / "model.onnx")
    )
    assert plan["reference_batches"] == [1, 8]
    with np.load(bundle / "reference.npz") as refs:
        assert refs["inputs_b8"].shape == (8, 1, 28, 28) and refs["outputs_b8"].shape == (8, 10)
    for name in KIT_FILES:
        assert (bundle / name).read_bytes() == (KIT_DIR / name).read_bytes()
    design = plan["calibration"]
    assert design["sha256"] == sha256_file(bundle / "calibration.zip") and design["variant"] == "fp32"
    readme = (bundle / "README.md").read_text()
    assert "python3 run_on_device.py" in readme and shlex.join(plan["trtexec_bench"]) in readme
    assert plan["trtexec_build"][:2] == ["trtexec", "--onnx=model.onnx"]


def test_jetson_bundle_passes_its_own_onnxruntime_parity_check_without_torch_or_wave_deploy(
    jetson_export, tmp_path
):
    bundle = tmp_path / "bundle"
    shutil.copytree(jetson_export[0] / "bundle", bundle)
    proc = run_kit(
        bundle, "--runtime", "onnxruntime", "--iterations", "20", "--warmup", "2", "--threads", "1"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((bundle / "device_report.json").read_text())
    assert report["passed"] and report["parity"]["passed"] and report["parity"]["max_abs_err"] <= 1e-4
    assert report["schema_version"] == 1 and report["runtime"] == "onnxruntime"
    assert report["providers"] == ["CPUExecutionProvider"] and report["precision"] == "fp32"
    assert set(report["latency"]) == set(LATENCY_KEYS)
    assert report["latency"]["iterations"] == 20 and report["latency"]["batch"] == 1


def test_kit_exits_7_and_reports_failure_when_reference_outputs_are_corrupted(jetson_export, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(jetson_export[0] / "bundle", bundle)
    with np.load(bundle / "reference.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["outputs_b8"][3, 2] += 0.5
    np.savez(bundle / "reference.npz", **arrays)
    proc = run_kit(bundle, "--runtime", "onnxruntime", "--iterations", "2", "--threads", "1")
    assert proc.returncode == 7, proc.stderr
    report = json.loads((bundle / "device_report.json").read_text())
    assert not report["passed"] and not report["parity"]["passed"]
    assert report["parity"]["max_abs_err"] == pytest.approx(0.5, rel=1e-3)
    assert "parity failed" in report["error"] and "latency" not in report


def test_kit_exits_3_for_an_incomplete_bundle(jetson_export, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(jetson_export[0] / "bundle", bundle)
    (bundle / "reference.npz").unlink()
    proc = run_kit(bundle, "--runtime", "onnxruntime")
    assert proc.returncode == 3
    assert "reference.npz" in json.loads((bundle / "device_report.json").read_text())["error"]


@pytest.mark.skipif(any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvmap")), reason="a GPU is present")
def test_kit_tensorrt_path_without_a_gpu_exits_4(jetson_export, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(jetson_export[0] / "bundle", bundle)
    proc = run_kit(bundle)  # runtime from plan.json: tensorrt
    assert proc.returncode == 4
    assert "no NVIDIA GPU" in json.loads((bundle / "device_report.json").read_text())["error"]


def test_trtexec_exported_times_give_compute_or_host_to_host_samples(tmp_path):
    spec = importlib.util.spec_from_file_location("trt_device", KIT_DIR / "trt_device.py")
    sys.path.insert(0, str(KIT_DIR))
    try:
        trt_device = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(trt_device)
    finally:
        sys.path.remove(str(KIT_DIR))
    times = [{"count": 2}, {"startComputeMs": 1.0, "computeMs": 0.25, "latencyMs": 0.4},
             {"startComputeMs": 2.0, "computeMs": 0.5, "latencyMs": 0.7}]  # fmt: skip
    (tmp_path / "times.json").write_text(json.dumps(times))
    assert trt_device.compute_times_ms(tmp_path / "times.json", compute_only=True) == [0.25, 0.5]
    assert trt_device.compute_times_ms(tmp_path / "times.json", compute_only=False) == [0.4, 0.7]


def test_export_cli_exit_codes(tmp_path, checkpoint):
    runner = CliRunner()
    missing = runner.invoke(
        cli, ["export", str(tmp_path / "nope.safetensors"), "--profile", "jetson", "--out", str(tmp_path)]
    )
    assert missing.exit_code == 3 and "does not exist" in missing.output
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert runner.invoke(cli, ["export", str(tmp_path / "junk.safetensors"), "--profile", "jetson",
                               "--out", str(tmp_path / "o")]).exit_code == 3  # fmt: skip
    bad_profile = runner.invoke(
        cli, ["export", str(checkpoint), "--profile", "no-such-device", "--out", str(tmp_path)]
    )
    assert bad_profile.exit_code == 3
    assert runner.invoke(cli, ["export", str(checkpoint), "--profile", "jetson", "--out", str(tmp_path / "o"),
                               "--opset", "13"]).exit_code == 2  # fmt: skip


def test_x86_export_writes_an_onnxruntime_bundle_with_a_labelled_subset(x86_export):
    out, summary = x86_export
    assert summary["tensorrt"] == {"target": False, "reason": "not a TensorRT target (runtime onnxruntime)"}
    assert (
        summary["onnxruntime"]["bundle"] == str(out / "bundle")
        and summary["onnx"]["model"]["exporter"] == "legacy"
    )
    plan = json.loads((out / "bundle" / "plan.json").read_text())
    assert plan["build_plan"] is None and plan["models"] == {"fp32": "model.onnx"}
    assert plan["sha256"]["model.onnx"] == sha256_file(out / "model.onnx")
    meta = plan["validation"]
    with np.load(out / "bundle" / "validation.npz") as subset:  # all 500 of the built-in validation images
        assert subset["images"].shape == (500, 1, 28, 28) and subset["images"].dtype == np.uint8
        data = builtin_data()
        assert np.array_equal(subset["images"], data.val_images.numpy())
        assert np.array_equal(subset["labels"], data.val_labels.numpy())
        # the recorded normalisation gives exactly the inputs the build judged the model on
        norm = meta["normalization"]
        inputs = normalize_uint8(subset["images"], norm["mean"], norm["std"])
        assert np.array_equal(inputs, data.val_x.numpy())
    assert meta["n_images"] == 500 and meta["max_drop_points"] == 1.0 and meta["dtype"] == "uint8"
    assert sum(meta["per_class"].values()) == 500 and len(meta["predictions"]["model.onnx"]) == 500
    for name in ("run_on_device.py", "kit_common.py", "README.md"):
        assert (out / "bundle" / name).is_file()


def test_onnxruntime_kit_reports_accuracy_memory_and_the_model_hash(x86_export, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(x86_export[0] / "bundle", bundle)
    proc = run_kit(bundle, "--runtime", "onnxruntime", "--iterations", "5", "--warmup", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((bundle / "device_report.json").read_text())
    plan = json.loads((bundle / "plan.json").read_text())
    assert report["passed"] and report["model_file"] == "model.onnx"
    assert report["model_sha256"] == plan["sha256"]["model.onnx"]
    acc = report["accuracy"]
    assert (acc["n_images"], acc["source"]) == (500, "validation.npz") and acc["passed"]
    assert acc["top1"] == plan["validation"]["top1"]["model.onnx"]  # same file, same images, same runtime
    # image by image against the build machine: the same predictions, so nothing lost or gained
    assert (acc["gate"]["losses"], acc["gate"]["gains"], acc["gate"]["decision"]) == (0, 0, "pass")
    memory = report["memory"]
    assert memory["peak_rss_mib"] > 10 and report["latency"]["iterations"] == 5
    # the session alone, in a fresh process: less than the kit itself, which also holds the bundle's data
    assert (
        10 < memory["session_peak_rss_mib"] <= memory["peak_rss_mib"] and "fresh process" in memory["method"]
    )


def test_kit_refuses_a_model_file_whose_hash_does_not_match_the_bundle(x86_export, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(x86_export[0] / "bundle", bundle)
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    proc = run_kit(bundle, "--runtime", "onnxruntime", "--iterations", "2", "--threads", "1")
    assert proc.returncode == 3
    report = json.loads((bundle / "device_report.json").read_text())
    assert (
        not report["passed"]
        and "model.onnx: sha256" in report["error"]
        and "does not match" in report["error"]
    )
    assert "latency" not in report


def _failing_at_run(input_name: str) -> bytes:
    """A valid graph that ONNX Runtime loads but fails to run on any image batch (Reshape to 3x3)."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, 3])
    graph = helper.make_graph(
        [helper.make_node("Reshape", [input_name, "shape"], ["logits"])], "broken",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("broken", ["truncated", "fails at run"])
def test_onnxruntime_errors_on_the_bundles_model_are_one_line_exit_6(x86_export, tmp_path, broken):
    bundle = tmp_path / "bundle"
    shutil.copytree(x86_export[0] / "bundle", bundle)
    plan = json.loads((bundle / "plan.json").read_text())
    model = bundle / plan["models"][plan["precision"]]
    if broken == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    else:
        model.write_bytes(_failing_at_run("input"))
    plan["sha256"][model.name] = sha256_file(model)  # past the hash check: the file is what the plan says
    (bundle / "plan.json").write_text(json.dumps(plan))
    proc = run_kit(bundle, "--runtime", "onnxruntime", "--iterations", "2", "--threads", "1")
    assert proc.returncode == 6, proc.stderr
    assert "Traceback" not in proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert f"onnxruntime failed on {model.name}" in error
    report = json.loads((bundle / "device_report.json").read_text())
    assert not report["passed"] and report["error"] in error and "latency" not in report


def test_kit_gates_int8_on_device_accuracy(tmp_path, checkpoint):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--profile", "raspberry-pi-5", "--out", str(out),
                                      "--exporter", "legacy", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    plan_path = out / "bundle" / "plan.json"
    plan = json.loads(plan_path.read_text())
    assert plan["precision"] == "fp32"
    # the same bundle with the int8 file as the model to run, and a gate it cannot meet
    shutil.copy(out / "model.int8.onnx", out / "bundle" / "model.int8.onnx")
    plan["precision"], plan["models"]["int8"] = "int8", "model.int8.onnx"
    plan["sha256"]["model.int8.onnx"] = sha256_file(out / "model.int8.onnx")
    meta = plan["validation"]
    with np.load(out / "bundle" / "validation.npz") as subset:  # what the build machine measures with it
        inputs = normalize_uint8(
            subset["images"], meta["normalization"]["mean"], meta["normalization"]["std"]
        )
    pred = np.argmax(ort_logits(out / "model.int8.onnx", inputs), axis=1)
    meta["predictions"]["model.int8.onnx"] = pred.tolist()
    meta["max_drop_points"] = -50.0
    plan_path.write_text(json.dumps(plan))
    proc = run_kit(out / "bundle", "--runtime", "onnxruntime", "--iterations", "2", "--threads", "1")
    assert proc.returncode == 7, proc.stderr
    report = json.loads((out / "bundle" / "device_report.json").read_text())
    assert not report["passed"] and "accuracy gate failed" in report["error"]
    assert report["parity"]["gated"] is False and report["accuracy"]["n_images"] == 500
    assert report["accuracy"]["gate"]["decision"] == "fail"


def test_export_data_option_judges_variants_on_that_image_folder(tmp_path, checkpoint):
    from PIL import Image

    data = builtin_data()
    for label in range(4):  # classes "0".."3": the same indices as the model's digits
        folder = tmp_path / "digits" / str(label)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(data.val_labels.numpy() == label)[:10]:
            Image.fromarray(data.val_images[i, 0].numpy()).save(folder / f"{i}.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--profile", "x86-cpu", "--out", str(out),
                                      "--exporter", "legacy", "--data", str(tmp_path / "digits"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    n_val = summary["onnx"]["accuracy"]["n_images"]
    assert 0 < n_val < 40 and summary["onnx"]["validation_source"] == "given validation data"
    assert all(v["n_images"] == n_val for v in summary["onnx"]["variants"])
    assert summary["onnx"]["calibration_source"].endswith("given training images")
    missing = CliRunner().invoke(cli, ["export", str(checkpoint), "--profile", "x86-cpu", "--out", str(out),
                                       "--data", str(tmp_path / "nope")])  # fmt: skip
    assert missing.exit_code == 3 and "does not exist" in missing.output


def test_export_exits_7_when_the_profiles_own_precision_fails_its_gate(
    tmp_path, checkpoint, impossible_accuracy_gate
):
    text = (Path(__file__).resolve().parents[1] / "profiles" / "x86-cpu.yaml").read_text()
    text = text.replace("precision: fp32", "precision: int8")
    impossible_accuracy_gate()
    (tmp_path / "strict.yaml").write_text(text.replace("name: x86-cpu", "name: strict-cpu"))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--profile", str(tmp_path / "strict.yaml"),
                                      "--out", str(out), "--exporter", "legacy"])  # fmt: skip
    assert result.exit_code == 7 and "failed its accuracy gate" in result.output
    summary = json.loads((out / "export.json").read_text())
    assert summary["onnx"]["chosen_passed"] is False and summary["onnxruntime"]["bundle"] is None
    assert (out / "rejected" / "model.int8.onnx").is_file() and not (out / "model.int8.onnx").exists()
    assert not (out / "bundle").exists()


def test_export_help_names_commands_that_exist():
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0 and "--data" in result.output
    assert "`fold`" not in result.output and "`build`" in result.output


def _variant_profile(version: str, precision: str):
    from wave_deploy.profiles import load_profile

    jetson = load_profile("jetson")
    return jetson.model_copy(
        update={
            "software": jetson.software.model_copy(update={"tensorrt_version": version}),
            "runtime": jetson.runtime.model_copy(update={"precision": precision}),
        }
    )


@pytest.mark.parametrize(
    ("version", "precision", "model_file"),
    [("11.0", "fp16", "model.fp16.onnx"), ("10.3", "int8", "model.int8.qdq.onnx")],
)
def test_bundle_carries_the_onnx_variant_the_plan_builds_from_and_the_kit_checks_it(
    tmp_path, version, precision, model_file
):
    from wave_deploy.exporters import export_for_profile
    from wave_deploy.exporters.base import data_inputs
    from wave_deploy.training.folding import load_folded_file

    model, spec, _ = load_folded_file(_checkpoint_path(tmp_path))
    summary = export_for_profile(
        model, spec, _variant_profile(version, precision), tmp_path / "out", **data_inputs(builtin_data())
    )
    plan = json.loads((tmp_path / "out" / "bundle" / "plan.json").read_text())
    assert plan["models"][plan["build_plan"]["onnx_variant"]] == model_file
    assert plan["models"][precision] == model_file  # the kit looks the file up by precision name
    assert plan["trtexec_build"][1] == f"--onnx={model_file}"
    [chosen] = [v for v in summary["onnx"]["variants"] if v["chosen"]]
    assert chosen["precision"] == precision and chosen["passed"] and chosen["file"] == model_file
    proc = run_kit(
        tmp_path / "out" / "bundle", "--runtime", "onnxruntime", "--iterations", "3", "--threads", "1"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "bundle" / "device_report.json").read_text())
    assert report["precision"] == precision and report["model_file"] == model_file
    assert report["parity"]["tolerance"] == plan["tolerances"][precision] and report["parity"]["passed"]


def _checkpoint_path(tmp_path: Path) -> Path:
    path = tmp_path / "folded.safetensors"
    save_folded(path, trained_state(), SPEC)
    return path


# --- calibration on the device (run_on_device.py --calibrate) --------------------------------------------


def test_onnxruntime_kit_calibrates_and_its_samples_fit_the_calibration_plan_uses(x86_export, tmp_path):
    from wave_deploy._kit.kit_design import Design

    from wave_deploy.calibration.device_samples import read_samples

    bundle = tmp_path / "bundle"
    shutil.copytree(x86_export[0] / "bundle", bundle)
    samples, workdir = tmp_path / "samples.json", tmp_path / "work"
    workdir.mkdir()
    args = ["--calibrate", "--quick", "--threads", "1", "--clock", "thread", "--out", str(samples),
            "--workdir", str(workdir)]  # fmt: skip
    proc = run_kit(bundle, *args)
    assert proc.returncode == 0, proc.stderr
    design = Design(bundle / "calibration.zip")
    quick = design.index["quick"]
    lines = proc.stderr.splitlines()
    assert (
        lines[0].startswith(f"[run_on_device] calibrate: {len(quick)} measurements of")
        and "estimated" in lines[0]
    )
    assert f"calibrate: {len(quick)}/{len(quick)} (pass 1/1)" in proc.stderr
    parsed, _ = read_samples(samples)
    assert [[s.depth, s.embed_dim, s.batch] for s in parsed.samples] == quick
    assert parsed.geometry.head_dim == SPEC.head_dim and parsed.geometry.img_size == SPEC.img_size
    assert (parsed.runtime.threads, parsed.runtime.clock, parsed.settings.quick) == (1, "thread", True)
    assert list(workdir.iterdir()) == [] and not list(bundle.glob("*.data"))  # the weights written are gone
    cal = tmp_path / "cal.json"
    fitted = CliRunner().invoke(
        cli, ["calibrate", "--profile", "x86-cpu", "--from-device", str(samples), "--out", str(cal), "--json"]
    )
    assert fitted.exit_code == 0, fitted.output
    summary = json.loads(fitted.stdout)
    assert summary["source"]["kind"] == "device" and summary["machine"] == parsed.machine.model_dump()
    spec = f"depth=1,embed_dim={SPEC.embed_dim},num_heads={SPEC.num_heads}"
    plan = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--calibration", str(cal), "--spec", spec,
                                    "--json"])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    # the quick design: a smoke check, not calibrated evidence
    assert json.loads(plan.stdout)["latency"]["source"] == f"quick-calibration:{cal}"


def test_kit_calibration_refuses_bad_usage_and_a_changed_design_without_writing(
    x86_export, jetson_export, tmp_path
):
    x86, jetson = tmp_path / "x86", tmp_path / "jetson"
    shutil.copytree(x86_export[0] / "bundle", x86)
    shutil.copytree(jetson_export[0] / "bundle", jetson)
    out = tmp_path / "samples.json"
    assert run_kit(x86, "--calibrate").returncode == 2  # no --out
    assert run_kit(x86, "--out", str(out)).returncode == 2  # --out without --calibrate
    wrong = run_kit(jetson, "--calibrate", "--runtime", "onnxruntime", "--out", str(out))
    assert wrong.returncode == 2 and "timed with tensorrt" in wrong.stderr
    thread = run_kit(x86, "--calibrate", "--clock", "thread", "--threads", "2", "--out", str(out))
    assert thread.returncode == 2 and "--threads 1" in thread.stderr
    assert run_kit(x86, "--calibrate", "--out", str(tmp_path)).returncode == 3  # a directory
    with open(x86 / "calibration.zip", "ab") as fh:
        fh.write(b"\0")
    changed = run_kit(x86, "--calibrate", "--quick", "--out", str(out))
    assert changed.returncode == 3 and "calibration.zip: sha256 does not match" in changed.stderr
    assert not out.exists() and "Traceback" not in changed.stderr


def _kit(name: str):
    """A kit module imported from export/ as the bundle runs it (its siblings by their plain names)."""
    if str(KIT_DIR) not in sys.path:
        sys.path.insert(0, str(KIT_DIR))
    return importlib.import_module(name)


FAKE_TRTEXEC = """#!{python}
import json, pathlib, sys
args = dict(a.split("=", 1) if "=" in a else (a, "") for a in sys.argv[1:])
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
print("[I] TensorRT version: 10.3.0")
print("[I] Selected Device: Fake Orin")
if "--saveEngine" in args:
    graph = pathlib.Path(args["--onnx"])
    assert graph.is_file() and graph.with_suffix(".data").is_file(), "graph and weights must be written first"
    pathlib.Path(args["--saveEngine"]).write_text(graph.stem)
if "--loadEngine" in args:  # vit_d<width>_l<depth>_...: 0.01 ms per block and 32 channels, per image
    name = pathlib.Path(args["--loadEngine"]).read_text()
    width, depth = int(name.split("_d")[1].split("_")[0]), int(name.split("_l")[1].split("_")[0])
    batch = int(args["--shapes"].split(":")[1].split("x")[0])
    ms = 0.01 * depth * width / 32 * batch
    times = [{{"computeMs": ms * (1 + 0.01 * (i % 3)), "latencyMs": 2 * ms}} for i in range(int(args["--iterations"]))]
    pathlib.Path(args["--exportTimes"]).write_text(json.dumps(times))
"""


def test_tensorrt_kit_calibration_builds_one_engine_per_model_and_times_every_point(
    jetson_export, tmp_path, monkeypatch, capsys
):
    import argparse

    bundle = tmp_path / "bundle"
    shutil.copytree(jetson_export[0] / "bundle", bundle)
    fake, calls = tmp_path / "trtexec", tmp_path / "calls.jsonl"
    fake.write_text(FAKE_TRTEXEC.format(python=sys.executable, log=str(calls)))
    fake.chmod(0o755)
    trt_device, kit_calibrate = _kit("trt_device"), _kit("kit_calibrate")
    monkeypatch.setattr(trt_device, "find_gpu", lambda: "/dev/fake-gpu")
    plan = json.loads((bundle / "plan.json").read_text())
    args = argparse.Namespace(runtime="auto", quick=True, trtexec=str(fake), workdir=tmp_path, threads=None,
                              provider=None, clock="wall")  # fmt: skip
    content = kit_calibrate.samples_file(bundle, plan, args)
    err = capsys.readouterr().err
    assert "engine builds and" in err and "estimated" in err and "(pass 1/1)" in err
    runtime = content["runtime"]
    assert (runtime["name"], runtime["version"], runtime["threads"], runtime["clock"]) == (
        "tensorrt",
        "10.3.0",
        None,
        "gpu",
    )
    for s in content["samples"]:  # each point: the median of what trtexec reported for its engine and batch
        assert s["p50_ms"] == pytest.approx(0.01 * s["depth"] * s["embed_dim"] / 32 * s["batch"] * 1.01)
    argv = [json.loads(line) for line in calls.read_text().splitlines()]
    builds, timings = (
        [a for a in argv if any(x.startswith("--saveEngine=") for x in a)],
        [a for a in argv if any(x.startswith("--loadEngine=") for x in a)],
    )
    assert len(builds) == len({(s["depth"], s["embed_dim"]) for s in content["samples"]})
    assert len(timings) == len(content["samples"])  # quick: one pass
    assert all("--fp16" in a and "--skipInference" in a and "--noDataTransfers" not in a for a in builds)
    assert all("--noDataTransfers" in a and "--useSpinWait" in a for a in timings)
    (tmp_path / "samples.json").write_text(json.dumps(content))
    fitted = CliRunner().invoke(cli, ["calibrate", "--profile", "jetson", "--from-device", str(tmp_path / "samples.json"),
                                      "--out", str(tmp_path / "cal.json")])  # fmt: skip
    assert fitted.exit_code == 0, fitted.output


def test_tensorrt_kit_calibration_checks_the_engine_builds_memory_before_running_trtexec(
    jetson_export, tmp_path, monkeypatch
):
    import argparse

    bundle = tmp_path / "bundle"
    shutil.copytree(jetson_export[0] / "bundle", bundle)
    fake, calls = tmp_path / "trtexec", tmp_path / "calls.jsonl"
    fake.write_text(FAKE_TRTEXEC.format(python=sys.executable, log=str(calls)))
    fake.chmod(0o755)
    trt_device, kit_calibrate, kit_common = _kit("trt_device"), _kit("kit_calibrate"), _kit("kit_common")
    monkeypatch.setattr(trt_device, "find_gpu", lambda: "/dev/fake-gpu")
    plan = json.loads((bundle / "plan.json").read_text())
    design = kit_calibrate.load_design(bundle, plan)
    points = kit_calibrate.design_points(design, quick=True)
    design.close()
    workspace = plan["build_plan"]["workspace_mib"]
    peaks = [trt_device.build_peak_mib(m, workspace) for m, _ in points]
    runtime_only = max(m["memory_mib"] for m, _ in points)
    assert max(peaks) > runtime_only  # the build needs more than timing the engine does
    # a device with memory for the runtime but not for the engine build: refused before any trtexec call
    monkeypatch.setattr(kit_calibrate, "available_mib", lambda: (runtime_only + max(peaks)) / 2)
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = argparse.Namespace(runtime="auto", quick=True, trtexec=str(fake), workdir=workdir, threads=None,
                              provider=None, clock="wall")  # fmt: skip
    with pytest.raises(kit_common.KitError) as info:
        kit_calibrate.samples_file(bundle, plan, args)
    assert info.value.code == kit_common.EXIT_MISSING and "to build its engine" in str(info.value)
    assert "\n" not in str(info.value)
    assert not calls.exists() and list(workdir.iterdir()) == []  # nothing run, no weights written
    monkeypatch.setattr(kit_calibrate, "available_mib", lambda: max(peaks) + 1)
    assert kit_calibrate.samples_file(bundle, plan, args)["samples"]


def test_trtexec_command_lines_for_a_design_model_keep_the_plans_build_flags():
    trt_device = _kit("trt_device")
    build_line = ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", "--minShapes=input:1x3x8x8",
                  "--optShapes=input:1x3x8x8", "--maxShapes=input:8x3x8x8", "--fp16", "--memPoolSize=workspace:512M",
                  "--timingCacheFile=timing.cache", "--skipInference"]  # fmt: skip
    cmd = trt_device.design_build_command(
        "/t/trtexec", build_line, "g.onnx", "g.engine", "input", [3, 8, 8], [1, 2], 1
    )
    assert cmd == ["/t/trtexec", "--onnx=g.onnx", "--saveEngine=g.engine", "--minShapes=input:1x3x8x8",
                   "--optShapes=input:1x3x8x8", "--maxShapes=input:2x3x8x8", "--fp16", "--memPoolSize=workspace:512M",
                   "--timingCacheFile=timing.cache", "--skipInference"]  # fmt: skip
    assert "--optShapes=input:2x3x8x8" in trt_device.design_build_command(
        "t", build_line, "g", "e", "input", [3, 8, 8], [1, 2], 8
    )
    bench = {"warmup_ms": 500, "avg_runs": 10, "use_spin_wait": False, "no_data_transfers": True}
    assert trt_device.design_time_command("t", "g.engine", "input", [3, 8, 8], 2, bench, 30, "times.json") == [
        "t", "--loadEngine=g.engine", "--shapes=input:2x3x8x8", "--iterations=30", "--warmUp=500", "--duration=0",
        "--avgRuns=10", "--exportTimes=times.json", "--noDataTransfers"]  # fmt: skip


def test_the_kit_and_the_build_machine_count_the_same_weight_copies_in_an_engine_build():
    """trt_device.BUILD_WEIGHT_COPIES restates planning.memory's (the kit imports no wave-deploy): one number."""
    from wave_deploy.planning.memory import BUILD_WEIGHT_COPIES

    assert _kit("trt_device").BUILD_WEIGHT_COPIES == BUILD_WEIGHT_COPIES
