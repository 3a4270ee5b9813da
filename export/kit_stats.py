"""Latency statistics and the timing loop: the ONE definition that the build machine's benchmark (wave_deploy.bench.stats), the
on-device kit (run_on_device.py, trt_device.py) and the report schema (wave_deploy.reports.schema) all use.

This file is copied into every on-device bundle, so it needs nothing but the Python standard library: no
numpy, no wave-deploy. wave-deploy imports it as ``wave_deploy._kit.kit_stats``.

Percentiles use linear interpolation between the two nearest order statistics (Hyndman & Fan method 7,
numpy's default), with numpy's own arithmetic, so a number here equals ``numpy.percentile`` on the same
samples bit for bit.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TIMED_COMPUTE = "compute only"  # inputs and outputs stay on the device; the device is synchronized
TIMED_HOST_TO_HOST = "host-to-host"  # numpy in, numpy out: includes every copy a caller would pay
PERCENTILES = (50, 90, 95, 99)
ORDER = ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")  # never decreasing
ORDER_SLACK = 1e-9  # relative to max_ms: the rounding of a mean of equal samples


class StatsError(ValueError):
    """Samples or arguments that cannot be summarized (wave-deploy turns it into a usage error)."""


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
    (runners synchronize the device inside it). ``clock``: integer nanoseconds (``time.thread_time_ns`` for
    the calling thread's CPU time).
    """
    if warmup < 0 or iterations < 1 or min_duration_s < 0:
        raise StatsError("need warmup >= 0, iterations >= 1 and min_duration_s >= 0")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    total_ns, min_ns = 0, int(min_duration_s * 1e9)
    while len(samples) < iterations or total_ns < min_ns:
        start = clock()
        fn()
        elapsed = clock() - start
        total_ns += elapsed
        samples.append(elapsed / 1e6)
    return samples


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted samples, numpy's 'linear' method."""
    n = len(sorted_samples)
    if n == 0:
        raise StatsError("no latency samples to summarize")
    if not 0 <= q <= 100:
        raise StatsError(f"percentile must be within 0..100, got {q}")
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
    """Summary of per-iteration latencies of one (runtime, model, batch): what was timed, how, on what."""

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
    threads: int | None = None

    # pydantic (wave-deploy's report schema) validates this class with this configuration; the kit never
    # imports pydantic, to which this is a plain dictionary.
    __pydantic_config__ = {"strict": True, "extra": "forbid"}  # noqa: RUF012

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def at(self, name: str) -> float:
        """Latency at a named statistic: 'p50', 'p90', 'p95', 'p99', 'mean', 'min' or 'max'."""
        key = f"{name}_ms"
        if key not in LATENCY_KEYS:
            raise StatsError(f"unknown latency statistic '{name}'")
        return getattr(self, key)

    def problems(self) -> list[str]:
        """Why these figures cannot be a measurement (empty when they can): every latency and the throughput
        finite and positive, min <= p50 <= p90 <= p95 <= p99 <= max and the mean within [min, max] (up to
        ORDER_SLACK of max: a mean of equal samples can land one rounding step outside), batch and iterations
        >= 1, warmup >= 0."""
        out = []
        for name in (*ORDER, "mean_ms", "throughput_img_per_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                out.append(f"{name} must be a finite number, got {value!r}")
            elif value <= 0:
                out.append(f"{name} must be positive, got {value!r}")
        for name, least in (("batch", 1), ("iterations", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                out.append(f"{name} must be an integer >= {least}, got {value!r}")
        if out:
            return out
        slack = ORDER_SLACK * self.max_ms
        for a, b in itertools.pairwise(ORDER):
            if getattr(self, a) > getattr(self, b) + slack:
                out.append(f"percentiles out of order: {a} {getattr(self, a):g} > {b} {getattr(self, b):g} "
                           "(expected min <= p50 <= p90 <= p95 <= p99 <= max)")  # fmt: skip
                break
        if not self.min_ms - slack <= self.mean_ms <= self.max_ms + slack:
            out.append(
                f"mean_ms {self.mean_ms:g} is outside [min_ms {self.min_ms:g}, max_ms {self.max_ms:g}]"
            )
        return out


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
        raise StatsError("no latency samples to summarize")
    if timed not in (TIMED_COMPUTE, TIMED_HOST_TO_HOST):
        raise StatsError(f"timed must be '{TIMED_COMPUTE}' or '{TIMED_HOST_TO_HOST}', got {timed!r}")
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
