"""Peak resident memory of one ONNX Runtime session, measured in a fresh process on the device.

The memory budget (budgets.memory_mib) and wave-deploy's memory model speak of the resident memory of a
process that runs the model: Python + numpy + ONNX Runtime + one session + its inferences. The kit's own
peak also holds the reference and validation data it loaded, so it would overstate the model's memory. This
module, run as a script, creates the session at the kit's threads and providers and runs three inferences at
the budget's batch in a process of its own, and prints its peak resident set: VmHWM from /proc on Linux (an
exec'd child's ru_maxrss would still hold the parent's peak), ru_maxrss elsewhere. The same method measured
the ONNX Runtime factors of wave-deploy's memory model (benchmarks/latency_model.py --memory-only).

Standard library and numpy only; no wave-deploy import.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

METHOD = "peak RSS of a fresh process: python + numpy + onnxruntime + one session + 3 inferences at the batch"


def _peak_kib() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM")).split()[1])
    except (OSError, StopIteration, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def session_memory(
    model: Path, batch: int, threads: int, providers: list[str], timeout_s: float = 600
) -> dict:
    """{"session_peak_rss_mib", "import_rss_mib", "method"}, or {"session_error"} when the probe failed (the
    kit then reports only its own peak)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        str(model),
        str(batch),
        str(threads),
        ",".join(providers),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        found = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"session_error": f"memory probe failed: {exc}"}
    if not found:
        tail = " ".join((proc.stderr or "").strip().splitlines()[-2:])
        return {"session_error": f"memory probe exited {proc.returncode}: {tail}"}
    return {
        "session_peak_rss_mib": found["peak_kib"] / 1024.0,
        "import_rss_mib": found["import_kib"] / 1024.0,
        "method": METHOD,
    }


def _probe(model: str, batch: int, threads: int, providers: str) -> None:
    import numpy as np
    import onnxruntime as ort

    base = _peak_kib()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=providers.split(","))
    inp = session.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(3):
        session.run(None, {inp.name: x})
    print(json.dumps({"import_kib": base, "peak_kib": _peak_kib()}))


if __name__ == "__main__":
    _probe(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
