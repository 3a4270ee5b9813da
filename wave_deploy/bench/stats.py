"""Latency statistics and the timing loop shared by every runner (DESIGN section 7: measured latency).

``LatencyStats`` and its percentile arithmetic have ONE definition, ``export/kit_stats.py`` (shipped in every
on-device bundle, importable here as ``wave_deploy._kit.kit_stats``): the local benchmark, the on-device kit
and the report schema all use it. This module adds the timing loop and turns the kit's errors into usage
errors.
"""

from __future__ import annotations

import json
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


def time_calls(fn: Callable[[], object], **how: Any) -> list[float]:
    """``kit_stats.time_calls`` (the one timing loop, the device kit's too): ``warmup`` untimed calls, then
    per-call latencies in ms; bad arguments are a usage error (exit 2)."""
    try:
        return kit_stats.time_calls(fn, **how)
    except StatsError as exc:
        raise UsageError(str(exc)) from None


def cpu_description() -> str:
    """CPU model and logical core count, e.g. 'AMD EPYC 7B13 (2 logical cores)' (see wave_deploy.probe)."""
    return probe.cpu_description()
