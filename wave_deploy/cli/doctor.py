"""``wave-deploy doctor``: what this machine offers wave-deploy.

Reports Python, the platform (and the Jetson L4T release where there is one), the CPU, torch with CUDA and
its GPUs, torchvision, timm, onnx, onnxruntime with its execution providers, onnxscript and TensorRT.
A package that fails to import is reported with its error, not raised: the point of ``doctor`` is to show a
broken environment, so it exits 0 whenever it can print the report.

TensorRT is imported only when torch sees a CUDA GPU. Without one, the TensorRT runtime can log an error and
abort the process instead of raising (DESIGN section 6), so then only its installed version is read from the
package metadata, which does not load the library.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import click

from wave_deploy.cli.output import console, print_json, table

log = logging.getLogger(__name__)

# Distributions that may carry the TensorRT Python bindings (the pip meta package, the CUDA-major wheels,
# JetPack's python3-libnvinfer egg-info).
_TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13", "tensorrt_cu12")


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu_model() -> str:
    """The CPU's marketing name (x86 /proc/cpuinfo) or, on Arm boards, the cores' implementer/part."""
    cpuinfo = _read_text("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    if fields.get("CPU part"):  # Arm: e.g. implementer 0x41 (Arm), part 0xd0b (Cortex-A76)
        return f"Arm CPU implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return platform.processor() or platform.machine() or "unknown"


def _board_model() -> str | None:
    """The board name from the device tree (Jetson, Raspberry Pi); None on PCs and servers."""
    text = _read_text("/proc/device-tree/model")
    return text.strip("\x00\n ") if text else None


def _l4t_release() -> str | None:
    """Jetson Linux release, e.g. 'R36.4.0', from /etc/nv_tegra_release; None off Jetson."""
    text = _read_text("/etc/nv_tegra_release")
    if not text:
        return None
    first = text.splitlines()[0]  # "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: ..., EABI: ..."
    try:
        major = first.split()[1]
        revision = first.split("REVISION:")[1].split(",")[0].strip()
    except IndexError:
        return first.lstrip("# ").strip()
    return f"{major}.{revision}"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _import_probe(module_name: str) -> tuple[Any, dict[str, Any]]:
    """Import ``module_name``; return (module or None, report). Import errors are reported, not raised."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None, {"installed": False, "version": None}
        log.debug("importing %s failed", module_name, exc_info=True)
        return None, {"installed": True, "version": None, "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a broken install: show it, that is what doctor is for
        log.debug("importing %s failed", module_name, exc_info=True)
        return None, {"installed": True, "version": None, "error": f"{type(exc).__name__}: {exc}"}
    return module, {"installed": True, "version": str(getattr(module, "__version__", None) or "unknown")}


def _torch_report() -> dict[str, Any]:
    torch, report = _import_probe("torch")
    report.update({"cuda_available": False, "cuda_version": None, "gpus": []})
    if torch is None:
        return report
    report["cuda_version"] = torch.version.cuda
    report["cuda_available"] = bool(torch.cuda.is_available())
    if report["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            report["gpus"].append(
                {
                    "index": index,
                    "name": props.name,
                    "compute_capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "sm_count": props.multi_processor_count,
                }
            )
    return report


def _onnxruntime_report() -> dict[str, Any]:
    ort, report = _import_probe("onnxruntime")
    report["providers"] = list(ort.get_available_providers()) if ort is not None else []
    return report


def _installed_tensorrt_version() -> str | None:
    for dist in _TENSORRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _tensorrt_report(cuda_gpu_present: bool) -> dict[str, Any]:
    if not cuda_gpu_present:
        version = _installed_tensorrt_version()
        return {
            "installed": version is not None,
            "version": version,
            "loaded": False,
            "note": "not loaded: no CUDA GPU visible to torch",
        }
    trt, report = _import_probe("tensorrt")
    report["loaded"] = trt is not None
    return report


def collect_environment() -> dict[str, Any]:
    """Everything ``doctor`` reports, as JSON-ready data."""
    from wave_deploy import __version__

    torch_report = _torch_report()
    cuda_gpu_present = torch_report["cuda_available"] and bool(torch_report["gpus"])
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "wave_deploy": {"version": __version__},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "board": _board_model(),
            "l4t_release": _l4t_release(),
        },
        "cpu": {
            "model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "usable_cores": usable,
            "memory_gib": _memory_gib(),
        },
        "torch": torch_report,
        "torchvision": _import_probe("torchvision")[1],
        "timm": _import_probe("timm")[1],
        "onnx": _import_probe("onnx")[1],
        "onnxruntime": _onnxruntime_report(),
        "onnxscript": _import_probe("onnxscript")[1],
        "tensorrt": _tensorrt_report(cuda_gpu_present),
    }


def _status(report: dict[str, Any]) -> str:
    if report.get("error"):
        return "import failed"
    if not report.get("installed"):
        return "not installed"
    return str(report.get("version"))


def _rows(env: dict[str, Any]) -> list[list[str]]:
    plat, cpu, torch_r, trt = env["platform"], env["cpu"], env["torch"], env["tensorrt"]
    platform_detail = ", ".join(
        part
        for part in (
            f"board: {plat['board']}" if plat["board"] else "",
            f"Jetson Linux {plat['l4t_release']}" if plat["l4t_release"] else "",
        )
        if part
    )
    rows = [
        ["wave-deploy", env["wave_deploy"]["version"], ""],
        ["python", env["python"]["version"], env["python"]["executable"]],
        ["platform", f"{plat['system']} {plat['release']} ({plat['machine']})", platform_detail],
        [
            "cpu",
            cpu["model"],
            (
                f"{cpu['logical_cores']} logical cores, {cpu['usable_cores']} usable, "
                f"{cpu['memory_gib']} GiB RAM"
            ),
        ],
    ]
    torch_detail = torch_r.get("error") or (
        f"CUDA build {torch_r['cuda_version'] or 'none'}, CUDA available: "
        f"{'yes' if torch_r['cuda_available'] else 'no'}"
    )
    rows.append(["torch", _status(torch_r), torch_detail])
    for gpu in torch_r["gpus"]:
        rows.append(
            [
                f"gpu {gpu['index']}",
                gpu["name"],
                (
                    f"compute capability {gpu['compute_capability']}, {gpu['sm_count']} SMs, "
                    f"{gpu['memory_gib']} GiB"
                ),
            ]
        )
    if torch_r.get("installed") and not torch_r["gpus"]:
        rows.append(["gpu", "none", "no CUDA GPU visible to torch"])
    for name in ("torchvision", "timm", "onnx"):
        rows.append([name, _status(env[name]), env[name].get("error", "")])
    ort = env["onnxruntime"]
    rows.append(
        ["onnxruntime", _status(ort), ort.get("error") or "providers: " + ", ".join(ort["providers"])]
    )
    rows.append(["onnxscript", _status(env["onnxscript"]), env["onnxscript"].get("error", "")])
    trt_detail = trt.get("error") or trt.get("note", "")
    rows.append(["tensorrt", _status(trt), trt_detail])
    return rows


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
def doctor(as_json: bool) -> None:
    """Show the environment: Python, CPU, torch/CUDA/GPUs, timm, ONNX, ONNX Runtime providers, TensorRT.

    Exits 0 whenever it can report, even when a package is missing or broken (that is what it reports).
    """
    env = collect_environment()
    if as_json:
        print_json(env)
        return
    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 160)
    from rich.markup import escape

    rows = [[escape(str(cell)) for cell in row] for row in _rows(env)]  # error texts may hold [brackets]
    out.print(table("wave-deploy doctor", ["component", "status", "details"], rows))
