"""Latency statistics and the timing loop shared by every runner (DESIGN section 7: measured latency).

``LatencyStats`` and its percentile arithmetic have ONE definition, ``export/kit_stats.py`` (shipped in every
on-device bundle, importable here as ``wave_deploy._kit.kit_stats``): the local benchmark, the on-device kit
and the report schema all use it. This module adds the timing loop and turns the kit's errors into usage
errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from wave_deploy import probe
from wave_deploy._kit import kit_stats
from wave_deploy._kit.kit_stats import (
    LATENCY_KEYS,
    PERCENTILES,
    TIMED_COMPUTE,
    TIMED_HOST_TO_HOST,
    LatencyStats,
    StatsError,
)
from wave_deploy.errors import UsageError

__all__ = [
    "LATENCY_KEYS",
    "PERCENTILES",
    "TIMED_COMPUTE",
    "TIMED_HOST_TO_HOST",
    "Latency",
    "LatencyStats",
    "cpu_description",
    "percentile",
    "summarize",
    "time_calls",
]


_LATENCY = TypeAdapter(LatencyStats)


def _latency(value: object) -> object:
    """A latency block (a JSON object) as a LatencyStats, validated strictly as JSON is (every field present,
    no unknown keys, booleans and strings are not numbers) and as a measurement (``LatencyStats.problems``:
    finite, positive, percentiles in order)."""
    if not isinstance(value, dict):
        return value
    try:
        stats = _LATENCY.validate_json(json.dumps(value))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    problems = stats.problems()
    if problems:
        raise ValueError(problems[0])  # e.g. "p99_ms must be positive, got -1.0"
    return stats


# The field type of every latency block in a pydantic model (report.json, device_report.json, bench.json).
Latency = Annotated[LatencyStats, BeforeValidator(_latency)]


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted samples, numpy's 'linear' method (kit_stats)."""
    try:
        return kit_stats.percentile(sorted_samples, q)
    except StatsError as exc:
        raise UsageError(str(exc)) from None


def summarize(samples_ms: Sequence[float], **how: Any) -> LatencyStats:
    """Turn per-iteration latencies (ms) into LatencyStats: ``kit_stats.summarize`` (keywords batch, warmup,
    timed, runtime, hardware, threads), its errors as usage errors."""
    try:
        return kit_stats.summarize(samples_ms, **how)
    except StatsError as exc:
        raise UsageError(str(exc)) from None


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
