"""Latency statistics and the timing loop shared by every runner (DESIGN section 7: measured latency).

Percentiles use linear interpolation between the two nearest order statistics (Hyndman & Fan method 7,
numpy's default), so a number here equals ``numpy.percentile`` on the same samples. The keys of
``LatencyStats.to_dict()`` are the latency keys of report.json and of the on-device kit's
device_report.json (export/run_on_device.py writes the same keys without importing this package).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wave_deploy import probe
from wave_deploy.errors import UsageError

TIMED_COMPUTE = "compute only"  # inputs and outputs stay on the device; the device is synchronized
TIMED_HOST_TO_HOST = "host-to-host"  # numpy in, numpy out: includes every copy a caller would pay

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted samples, numpy's 'linear' method."""
    n = len(sorted_samples)
    if n == 0:
        raise UsageError("no latency samples to summarize")
    if not 0 <= q <= 100:
        raise UsageError(f"percentile must be within 0..100, got {q}")
    virtual = (n - 1) * (q / 100)
    lo = math.floor(virtual)
    hi = min(lo + 1, n - 1)
    gamma = virtual - lo
    a, b = float(sorted_samples[lo]), float(sorted_samples[hi])
    diff = b - a
    # Same arithmetic as numpy's _lerp, so the result is bit-identical.
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-iteration latencies of one (runner, batch) pair."""

    batch: int
    iterations: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput_img_per_s: float  # batch / mean latency
    timed: str  # TIMED_COMPUTE or TIMED_HOST_TO_HOST
    runtime: str  # e.g. "onnxruntime 1.32.0 [CPUExecutionProvider]"
    hardware: str
    threads: int | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def at(self, name: str) -> float:
        """Latency at a named percentile: 'p50', 'p90', 'p95', 'p99', 'mean', 'min' or 'max'."""
        key = f"{name}_ms"
        if key not in LATENCY_KEYS:
            raise UsageError(f"unknown latency statistic '{name}'")
        return getattr(self, key)


LATENCY_KEYS = tuple(f.name for f in dataclasses.fields(LatencyStats))


def summarize(
    samples_ms: Sequence[float],
    *,
    batch: int,
    warmup: int,
    timed: str,
    runtime: str,
    hardware: str,
    threads: int | None,
) -> LatencyStats:
    """Turn per-iteration latencies (ms) into LatencyStats."""
    if not samples_ms:
        raise UsageError("no latency samples to summarize")
    if timed not in (TIMED_COMPUTE, TIMED_HOST_TO_HOST):
        raise UsageError(f"timed must be '{TIMED_COMPUTE}' or '{TIMED_HOST_TO_HOST}', got {timed!r}")
    ordered = sorted(float(s) for s in samples_ms)
    mean = math.fsum(ordered) / len(ordered)
    p50, p90, p95, p99 = (percentile(ordered, q) for q in PERCENTILES)
    return LatencyStats(
        batch=batch,
        iterations=len(ordered),
        warmup=warmup,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=mean,
        min_ms=ordered[0],
        max_ms=ordered[-1],
        throughput_img_per_s=batch / (mean / 1000.0) if mean > 0 else float("inf"),
        timed=timed,
        runtime=runtime,
        hardware=hardware,
        threads=threads,
    )


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    iterations: int = 100,
    min_duration_s: float = 0.0,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then time each call; return per-call latencies in ms.

    Stops after ``iterations`` calls once at least ``min_duration_s`` of timed calls have passed (so either a
    fixed count, or a minimum duration when that is longer). ``fn`` must block until its work is finished
    (runners synchronize the device inside it).
    """
    if warmup < 0 or iterations < 1 or min_duration_s < 0:
        raise UsageError("need warmup >= 0, iterations >= 1 and min_duration_s >= 0")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    total_ns = 0
    min_ns = int(min_duration_s * 1e9)
    while len(samples) < iterations or total_ns < min_ns:
        start = clock()
        fn()
        elapsed = clock() - start
        total_ns += elapsed
        samples.append(elapsed / 1e6)
    return samples


def cpu_description() -> str:
    """CPU model and logical core count, e.g. 'AMD EPYC 7B13 (2 logical cores)' (see wave_deploy.probe)."""
    return probe.cpu_description()
