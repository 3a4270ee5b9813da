"""TensorRT side of the on-device kit: build the engine from plan.json, check parity, benchmark.

trtexec (shipped with JetPack at /usr/src/tensorrt/bin/trtexec) does the work: it builds the engine with
the plan's exact command line, runs the reference inputs (--loadInputs / --exportOutput) and times the
engine (--exportTimes, per-iteration GPU compute times). Where trtexec is missing but the tensorrt Python
package is present, the engine is built with the Python API; running it still needs trtexec. The GPU is
looked for before anything touches TensorRT. No wave-deploy, torch or timm imports here.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import shutil as _shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from kit_common import EXIT_INVALID, EXIT_MISSING, EXIT_STAGE, KitError, compare, latency_stats, log, one_line

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
GPU_NODES = ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl", "/dev/nvmap")


def find_gpu() -> str:
    found = [node for node in GPU_NODES if Path(node).exists()]
    if not found:
        raise KitError(f"no NVIDIA GPU device node found ({', '.join(GPU_NODES)})", EXIT_MISSING)
    return found[0]


def find_trtexec(explicit: str | None) -> str | None:
    for candidate in (explicit, shutil.which("trtexec"), JETPACK_TRTEXEC):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _run(cmd: list[str], cwd: Path, what: str, log_dir: Path | None = None) -> str:
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    (log_dir or cwd).joinpath(f"trtexec_{what}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise KitError(
            f"trtexec {what} failed (exit {proc.returncode}), see trtexec_{what}.log:\n{tail}", EXIT_STAGE
        )
    return proc.stdout + proc.stderr


def _parse_device(log_text: str) -> dict:
    """TensorRT version, GPU name and compute capability from trtexec's banner."""
    found = {}
    for key, pattern in (
        ("tensorrt_version", r"TensorRT version:\s*([0-9.]+)"),
        ("gpu_name", r"Selected Device:\s*(.+)"),
        ("compute_capability", r"Compute Capability:\s*([0-9.]+)"),
    ):
        match = re.search(pattern, log_text)
        if match:
            found[key] = match.group(1).strip()
    return found


_MIB = r"([0-9]+(?:\.[0-9]+)?)"
# trtexec's own memory lines (TensorRT 8.6 - 10): what the engine holds on the GPU once its execution context
# exists ("now: CPU a, GPU b (MiB)" after the TensorRT-managed allocations), and the builder's peaks.
_MANAGED = re.compile(
    r"TensorRT-managed allocation in [^:]*:.*?now: CPU " + _MIB + r", GPU " + _MIB + r" \(MiB\)"
)
_BUILD_ALLOC = re.compile(r"Peak memory usage of TRT CPU/GPU memory allocators: CPU " + _MIB + r" MiB, GPU "
                          + _MIB + r" MiB")  # fmt: skip
_BUILD_CPU = re.compile(r"Peak memory usage during Engine building and serialization: CPU: " + _MIB + r" MiB")


def parse_memory(log_text: str) -> dict:
    """The memory figures trtexec printed, in MiB (a key only where its line was found; pure):

    - ``tensorrt_device_mib``: TensorRT-managed GPU memory once the engine is deserialized and its execution
      context created (the largest "now: ... GPU b (MiB)" of the TensorRT-managed allocation lines): the
      engine's weights, activations and scratch, what the profile's memory budget is for;
    - ``build_peak_cpu_mib``: host memory peak during engine building and serialization;
    - ``build_peak_gpu_mib``: peak of TensorRT's GPU allocator while building;
    - ``build_peak_mib``: their sum where both are given (on unified-memory Jetsons both draw on one DRAM).
    """
    found: dict = {}
    managed = [float(gpu) for _cpu, gpu in _MANAGED.findall(log_text)]
    if managed:
        found["tensorrt_device_mib"] = max(managed)
    alloc = _BUILD_ALLOC.findall(log_text)
    if alloc:
        found["build_peak_gpu_mib"] = max(float(gpu) for _cpu, gpu in alloc)
    cpu = _BUILD_CPU.findall(log_text)
    if cpu:
        found["build_peak_cpu_mib"] = max(float(c) for c in cpu)
    if "build_peak_gpu_mib" in found and "build_peak_cpu_mib" in found:
        found["build_peak_mib"] = found["build_peak_cpu_mib"] + found["build_peak_gpu_mib"]
    return found


def children_peak_rss_mib() -> float | None:
    """Peak resident memory of the largest child process so far (trtexec), in MiB; None where unknown."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024.0


def build_with_python_api(plan: dict, onnx_path: Path, engine_path: Path) -> dict:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise KitError("neither trtexec nor the tensorrt Python package is available", EXIT_MISSING) from exc
    bp = plan["build_plan"]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if bp["path"] == "strongly_typed" else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise KitError(f"TensorRT cannot parse {onnx_path.name}: {errors}", EXIT_STAGE)
    config = builder.create_builder_config()
    if bp["workspace_mib"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(bp["workspace_mib"]) << 20)
    for name in bp["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if bp["disable_tf32"]:
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(bp["input_name"], bp["min_shape"], bp["opt_shape"], bp["max_shape"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise KitError("TensorRT failed to build the engine", EXIT_STAGE)
    engine_path.write_bytes(bytes(serialized))
    return {"tensorrt_version": trt.__version__, "built_with": "tensorrt python API"}


def _engine_output(out_json: Path, name: str) -> np.ndarray:
    """One output tensor from trtexec --exportOutput JSON: [{"name", "dimensions": "AxB", "values": [...]}]."""
    entries = json.loads(out_json.read_text(encoding="utf-8"))
    for entry in entries:
        if entry.get("name") == name:
            dims = [int(d) for d in str(entry["dimensions"]).split("x") if d]
            return np.asarray(entry["values"], dtype=np.float32).reshape(dims)
    raise KitError(f"trtexec output file {out_json.name} has no tensor '{name}'", EXIT_STAGE)


def compute_times_ms(times_json: Path, *, compute_only: bool) -> list[float]:
    """Per-iteration times from trtexec --exportTimes: GPU compute, or host-to-host latency with copies."""
    key = "computeMs" if compute_only else "latencyMs"
    try:
        entries = json.loads(times_json.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise TypeError("not a list of iterations")
        return [float(e[key]) for e in entries if isinstance(e, dict) and key in e]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise KitError(
            f"trtexec's times file {times_json.name} is unreadable: {one_line(exc)}", EXIT_STAGE
        ) from None


def run_tensorrt(bundle: Path, plan: dict, refs: dict, args) -> dict:
    gpu_node = find_gpu()
    bp = plan["build_plan"]
    if not bp:
        raise KitError("plan.json has no TensorRT build plan (a CPU profile?)", EXIT_INVALID)
    trtexec = find_trtexec(args.trtexec)
    onnx_file = plan["models"][bp["onnx_variant"]]
    engine_path = bundle / "model.engine"
    shape = lambda batch: "x".join(str(d) for d in [batch, *plan["sample_shape"]])
    engine = {"gpu_device_node": gpu_node, "onnx_file": onnx_file}
    memory: dict = {}
    if trtexec:
        build_cmd = [trtexec, *plan["trtexec_build"][1:]]
        build_log = _run(build_cmd, bundle, "build")
        engine.update(_parse_device(build_log), built_with="trtexec", command=build_cmd)
        memory.update(parse_memory(build_log))
    else:
        engine.update(build_with_python_api(plan, bundle / onnx_file, engine_path))
    # Beside the engine, as wave-deploy's build_engine does: which TensorRT and GPU it only runs on.
    meta = {k: engine.get(k) for k in ("tensorrt_version", "gpu_name", "compute_capability", "built_with")}
    (bundle / "engine.json").write_text(json.dumps({**meta, "precision": bp["precision"]}, indent=2) + "\n")
    if not trtexec:
        raise KitError(
            "engine built, but running it needs trtexec (JetPack: " + JETPACK_TRTEXEC + ")", EXIT_MISSING
        )
    name_in, name_out = bp["input_name"], plan["output_name"]
    tol = plan["tolerances"][bp["precision"]]
    checks = []
    for batch, (x, y) in refs.items():
        in_bin, out_json = bundle / f"ref_input_b{batch}.bin", bundle / f"trt_output_b{batch}.json"
        np.ascontiguousarray(x, dtype=np.float32).tofile(in_bin)
        _run([trtexec, f"--loadEngine={engine_path.name}", f"--shapes={name_in}:{shape(batch)}",
              f"--loadInputs={name_in}:{in_bin.name}", f"--exportOutput={out_json.name}",
              "--iterations=1", "--warmUp=0", "--duration=0"], bundle, f"parity_b{batch}")  # fmt: skip
        checks.append(compare(f"engine batch {batch}", _engine_output(out_json, name_out), y, tol))
    result = {
        "runtime": "tensorrt",
        "runtime_version": engine.get("tensorrt_version"),
        "precision": bp["precision"],
        "model_file": onnx_file,
        "engine": engine,
        "parity": {"tolerance": tol, "batches": checks},
    }
    if not all(c["passed"] for c in checks):
        return result
    bench = bp["bench"]
    compute_only = bool(bench["no_data_transfers"])
    cmd = [trtexec, f"--loadEngine={engine_path.name}", f"--shapes={name_in}:{shape(args.batch)}",
           f"--iterations={args.iterations}", f"--warmUp={bench['warmup_ms']}", "--duration=0",
           f"--avgRuns={bench['avg_runs']}", f"--percentile={','.join(str(p) for p in bench['percentiles'])}",
           "--exportTimes=trt_times.json"]  # fmt: skip
    cmd += ["--useSpinWait"] * bool(bench["use_spin_wait"]) + ["--noDataTransfers"] * compute_only
    memory.update(parse_memory(_run(cmd, bundle, "bench")))
    memory["trtexec_peak_rss_mib"] = children_peak_rss_mib()
    result["memory"] = memory
    samples = compute_times_ms(bundle / "trt_times.json", compute_only=compute_only)
    if not samples:
        raise KitError("trtexec wrote no per-iteration times", EXIT_STAGE)
    hardware = (
        f"{engine.get('gpu_name', 'NVIDIA GPU')} (compute capability {engine.get('compute_capability', '?')})"
    )
    result["latency"] = latency_stats(
        samples, batch=args.batch, warmup=0, timed="compute only" if compute_only else "host-to-host",
        runtime=f"tensorrt {engine.get('tensorrt_version', '?')} [{bp['precision']}]", hardware=hardware, threads=None,
    )  # fmt: skip
    result["bench"] = {"command": cmd, "warmup_ms": bench["warmup_ms"]}
    return result


# --- calibration: the bundle's design, one engine per model, trtexec timing per batch -----------------

_SHAPE_FLAGS = ("--onnx=", "--saveEngine=", "--minShapes=", "--optShapes=", "--maxShapes=", "--shapes=")


def _shape(input_name: str, batch: int, sample_shape: list) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in [batch, *sample_shape])}"


def design_build_command(trtexec: str, build_line: list, graph: str, engine: str, input_name: str,
                         sample_shape: list, batches: list, opt_batch: int) -> list:  # fmt: skip
    """The plan's build line (precision flags, TF32, workspace, timing cache, no inference) for one design
    graph: its ONNX file and engine, shapes from the smallest to the largest design batch, optimized for the
    deployed engine's batch (clamped into that range)."""
    low, high = min(batches), max(batches)
    keep = [a for a in build_line[1:] if not a.startswith(_SHAPE_FLAGS)]
    return [trtexec, f"--onnx={graph}", f"--saveEngine={engine}",
            f"--minShapes={_shape(input_name, low, sample_shape)}",
            f"--optShapes={_shape(input_name, min(max(opt_batch, low), high), sample_shape)}",
            f"--maxShapes={_shape(input_name, high, sample_shape)}", *keep]  # fmt: skip


def design_time_command(trtexec: str, engine: str, input_name: str, sample_shape: list, batch: int,
                        bench: dict, iterations: int, times_file: str) -> list:  # fmt: skip
    """trtexec timing one design engine at ``batch`` with the plan's bench settings."""
    cmd = [trtexec, f"--loadEngine={engine}", f"--shapes={_shape(input_name, batch, sample_shape)}",
           f"--iterations={iterations}", f"--warmUp={bench['warmup_ms']}", "--duration=0",
           f"--avgRuns={bench['avg_runs']}", f"--exportTimes={times_file}"]  # fmt: skip
    return (
        cmd
        + ["--useSpinWait"] * bool(bench["use_spin_wait"])
        + ["--noDataTransfers"] * bool(bench["no_data_transfers"])
    )


BUILD_S = 30.0  # an assumed engine build of a design model on a Jetson Orin (seconds); the pace corrects it
RUN_S = 2.0  # an assumed trtexec start, engine load and exit (seconds), plus its warm-up


# The TensorRT builder holds the parsed ONNX weights, its converted copy and the serialized engine at once
# (wave-deploy's planning.memory.BUILD_WEIGHT_COPIES, restated here: the kit imports no wave-deploy).
BUILD_WEIGHT_COPIES = 3.0


def build_peak_mib(model: dict, workspace_mib) -> float:
    """An estimate, not a measurement, of the memory one design model's engine build needs at its peak (MiB):
    the model's runtime memory at its largest batch (``memory_mib``: overhead, weights, activations) plus
    BUILD_WEIGHT_COPIES x its weights as the design writes them (``data_bytes``) plus the builder workspace
    limit of the plan (``--memPoolSize=workspace``; 0 where the plan sets none). On a unified-memory Jetson
    host and GPU draw on the same DRAM, so they are added."""
    return (
        float(model["memory_mib"])
        + BUILD_WEIGHT_COPIES * float(model["data_bytes"]) / (1 << 20)
        + float(workspace_mib or 0)
    )


def calibration_seconds(bench: dict) -> tuple[float, float]:
    """Assumed seconds per engine build and per timing run (the up-front estimate of a TensorRT calibration)."""
    return BUILD_S, RUN_S + bench["warmup_ms"] / 1000


def calibrate(bundle: Path, plan: dict, design, points: list, args) -> tuple[dict, list]:
    """Build each design model's engine with trtexec, time every (model, batch) in shuffled passes, keep each
    point's best pass: (runtime and settings records, samples)."""

    import kit_calibrate
    import kit_design

    find_gpu()
    trtexec = find_trtexec(args.trtexec)
    if not trtexec:
        raise KitError(
            "calibrating with TensorRT needs trtexec (JetPack: " + JETPACK_TRTEXEC + ")", EXIT_MISSING
        )
    bp, index = plan["build_plan"], design.index
    kit_calibrate.check_memory(points, lambda m: build_peak_mib(m, bp.get("workspace_mib")),
                               " to build its engine (an estimate: weights x3 plus the builder workspace)")  # fmt: skip
    timing = index["timing"]["quick" if args.quick else "full"]
    passes, bench = timing["passes"], bp["bench"]
    compute_only = bool(bench["no_data_transfers"])
    models: dict = {}
    for model, batch in points:
        models.setdefault(model["name"], [model]).append(batch)
    build_s, run_s = calibration_seconds(bench)
    total_s = len(models) * build_s + passes * len(points) * run_s
    log(f"calibrate: {len(points)} measurements of {len(models)} models with TensorRT: {len(models)} engine "
        f"builds and {passes * len(points)} trtexec timing runs; estimated {kit_design.clock_text(total_s)} "
        f"(assuming {build_s:g} s per build and {run_s:g} s per run: corrected as it goes); a progress line every "
        f"{kit_calibrate.PROGRESS_EVERY_S:g} s")  # fmt: skip
    pace = kit_calibrate.Pace(total_s)
    workdir = kit_calibrate.make_workdir(args.workdir)
    found, best, done = {}, {}, 0
    try:
        for i, (name, (model, *batches)) in enumerate(models.items(), start=1):
            graph = kit_calibrate.materialize(design, model, workdir)
            cmd = design_build_command(trtexec, plan["trtexec_build"], graph.name, f"{name}.engine",
                                       bp["input_name"], plan["sample_shape"], batches, bp["opt_shape"][0])  # fmt: skip
            found = {**_parse_device(_run(cmd, workdir, "calibration_build", bundle)), **found}
            (workdir / model["data"]).unlink()
            pace.step(build_s, i, len(models), "engines built")
        rng = random.Random(0)
        for n_pass in range(passes):
            order = list(points)
            rng.shuffle(order)
            for model, batch in order:
                cmd = design_time_command(trtexec, f"{model['name']}.engine", bp["input_name"],
                                          plan["sample_shape"], batch, bench, timing["iterations"], "times.json")  # fmt: skip
                _run(cmd, workdir, "calibration_time", bundle)
                ms = compute_times_ms(workdir / "times.json", compute_only=compute_only)
                if not ms:
                    raise KitError("trtexec wrote no per-iteration times", EXIT_STAGE)
                st = latency_stats(
                    ms,
                    batch=batch,
                    warmup=0,
                    timed="compute only" if compute_only else "host-to-host",
                    runtime=f"tensorrt {found.get('tensorrt_version', '?')}",
                    hardware="trtexec",
                    threads=None,
                )
                kit_calibrate.keep_best(best, (model["name"], batch), st)
                done += 1
                pace.step(run_s, done, passes * len(points), f"pass {n_pass + 1}/{passes}")
    finally:
        _shutil.rmtree(workdir, ignore_errors=True)
    version = found.get("tensorrt_version", "?")
    runtime = {"name": "tensorrt", "version": version, "detail": f"tensorrt {version} [{bp['precision']}]",
               "precision": bp["precision"], "threads": None, "clock": "gpu" if compute_only else "wall"}  # fmt: skip
    settings = {"passes": passes, "quick": bool(args.quick), "warmup": 0, "iterations": timing["iterations"],
                "min_duration_s": 0.0}  # fmt: skip
    samples = [kit_calibrate.sample_record(m, b, best[(m["name"], b)]) for m, b in points]
    return {"runtime": runtime, "settings": settings}, samples
