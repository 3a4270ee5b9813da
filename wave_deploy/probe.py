"""What this machine offers wave-deploy: the one place that probes the environment.

CPU (model, cores, memory), the board and Jetson L4T release, torch with CUDA and its GPUs, the other
packages' versions, ONNX Runtime's execution providers and TensorRT. ``collect_environment`` is what
``wave-deploy doctor`` reports; the runners, the training loop and the TensorRT exporter ask the small
functions (``cuda_available``, ``cuda_gpu``, ``cpu_description``, ``ort_providers`` ...) instead of probing
themselves. Importing this module imports nothing heavy: torch, onnxruntime and tensorrt load on first call.

A package that fails to import is reported with its error, not raised: ``collect_environment`` exists to show
a broken environment. TensorRT is imported only when torch sees a CUDA GPU: without one, the TensorRT runtime
can log an error and abort the process instead of raising (DESIGN section 6), so then only its installed
version is read from the package metadata, which does not load the library.
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

from wave_deploy.errors import MissingDependencyError
from wave_deploy.version import __version__

log = logging.getLogger(__name__)

# Distributions that may carry the TensorRT Python bindings (the pip meta package, the CUDA-major wheels,
# JetPack's python3-libnvinfer egg-info).
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13", "tensorrt_cu12")


# --- CPU, memory, board ----------------------------------------------------------------------------------


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model() -> str:
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
    for key in ("Hardware", "cpu model"):  # older Arm kernels, MIPS
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Logical cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_description() -> str:
    """CPU model and usable logical cores, e.g. 'AMD EPYC 7B13 (2 logical cores)' (what reports record)."""
    return f"{cpu_model()} ({usable_cores()} logical cores)"


def board_model() -> str | None:
    """The board name from the device tree (Jetson, Raspberry Pi); None on PCs and servers."""
    text = _read_text("/proc/device-tree/model")
    return text.strip("\x00\n ") if text else None


def l4t_release() -> str | None:
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


def memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_mib() -> float | None:
    """Memory a new allocation can have: MemAvailable on Linux, else the physical memory, else None."""
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) / 1024
            except (ValueError, IndexError):
                break
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


# --- CUDA, ONNX Runtime, TensorRT ---------------------------------------------------------------------------


def reset_peak_rss() -> None:
    """Reset this process's peak resident set to its current size (Linux: VmHWM through /proc/self/clear_refs);
    a no-op elsewhere, where ``peak_rss_mib`` then reports the peak since the process started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> tuple[float | None, str]:
    """(MiB, what it measures): the process's peak resident set since ``reset_peak_rss`` (VmHWM), else since
    it started (ru_maxrss), else None."""
    for line in (_read_text("/proc/self/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            try:
                return int(line.split()[1]) / 1024, "process peak RSS (VmHWM)"
            except (ValueError, IndexError):
                break
    try:
        import resource
    except ImportError:  # not on Windows
        return None, "not measurable here"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (
        rss / 2**20 if sys.platform == "darwin" else rss / 1024
    ), "process peak RSS since start (ru_maxrss)"


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def cuda_free_bytes(device) -> int:
    """Free memory of CUDA ``device`` in bytes, as the driver reports it now (imports torch)."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def host_name() -> str:
    """This machine's network name (records say where an engine was built)."""
    return platform.node()


def os_platform() -> str:
    """The operating system and architecture, e.g. 'Linux-6.8.0-x86_64-with-glibc2.39'."""
    return platform.platform()


def cuda_gpu(index: int = 0) -> dict[str, str]:
    """Name and compute capability of CUDA device ``index``; MissingDependencyError when there is no GPU."""
    import torch

    if not torch.cuda.is_available():
        raise MissingDependencyError("no CUDA GPU is available")
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu_name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def gpu_description() -> str:
    """CUDA device 0 as reports record it, e.g. 'NVIDIA L4 (compute capability 8.9)'."""
    gpu = cuda_gpu()
    return f"{gpu['gpu_name']} (compute capability {gpu['compute_capability']})"


def ort_providers() -> list[str]:
    """ONNX Runtime's available execution providers (imports onnxruntime)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def installed_tensorrt_version() -> str | None:
    """TensorRT's version from package metadata, without loading the library; None when not installed."""
    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def import_tensorrt():
    """Import tensorrt, after making sure a CUDA GPU exists (never the other way round)."""
    try:
        cuda_gpu()
    except MissingDependencyError as exc:
        raise MissingDependencyError("no CUDA GPU is available: TensorRT engines need one") from exc
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed",
            hint="install it from NVIDIA's index: pip install 'wave-deploy[tensorrt]'",
        ) from exc
    return tensorrt


# --- the whole environment (doctor) ----------------------------------------------------------------------


def import_probe(module_name: str) -> tuple[Any, dict[str, Any]]:
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


def torch_report() -> dict[str, Any]:
    torch, report = import_probe("torch")
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


def onnxruntime_report() -> dict[str, Any]:
    ort, report = import_probe("onnxruntime")
    report["providers"] = list(ort.get_available_providers()) if ort is not None else []
    return report


def tensorrt_report(cuda_gpu_present: bool) -> dict[str, Any]:
    if not cuda_gpu_present:
        version = installed_tensorrt_version()
        return {
            "installed": version is not None,
            "version": version,
            "loaded": False,
            "note": "not loaded: no CUDA GPU visible to torch",
        }
    trt, report = import_probe("tensorrt")
    report["loaded"] = trt is not None
    return report


def collect_environment() -> dict[str, Any]:
    """Everything ``doctor`` reports, as JSON-ready data."""

    torch_r = torch_report()
    cuda_gpu_present = torch_r["cuda_available"] and bool(torch_r["gpus"])
    return {
        "wave_deploy": {"version": __version__},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "board": board_model(),
            "l4t_release": l4t_release(),
        },
        "cpu": {
            "model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "usable_cores": usable_cores(),
            "memory_gib": memory_gib(),
        },
        "torch": torch_r,
        "torchvision": import_probe("torchvision")[1],
        "timm": import_probe("timm")[1],
        "onnx": import_probe("onnx")[1],
        "onnxruntime": onnxruntime_report(),
        "onnxscript": import_probe("onnxscript")[1],
        "tensorrt": tensorrt_report(cuda_gpu_present),
    }
