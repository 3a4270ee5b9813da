"""``wave-deploy doctor``: prints what ``wave_deploy.probe.collect_environment`` finds on this machine.

Python, the platform (and the Jetson L4T release where there is one), the CPU, torch with CUDA and its GPUs,
torchvision, timm, onnx, onnxruntime with its execution providers, onnxscript and TensorRT. A broken package is
shown with its error, so ``doctor`` exits 0 whenever it can print the report. The probing is the library's.
"""

from __future__ import annotations

from typing import Any

import click

from wave_deploy.cli.output import console, print_json, table
from wave_deploy.probe import collect_environment


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
