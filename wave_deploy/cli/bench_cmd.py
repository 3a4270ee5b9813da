"""``wave-deploy bench``: time an ONNX model (ONNX Runtime) or a TensorRT engine, trtexec-style summary."""

from __future__ import annotations

from pathlib import Path

import click

from wave_deploy.bench.stats import TIMED_COMPUTE, TIMED_HOST_TO_HOST
from wave_deploy.cli.options import BenchBatch, FiniteFloat, Threads, json_option
from wave_deploy.cli.output import echo, print_json
from wave_deploy.errors import InvalidInputError


def _summary_lines(model: Path, stats: dict) -> list[str]:
    s = stats
    return [
        "=== Performance summary ===",
        f"Model: {model}",
        f"Runtime: {s['runtime']}" + (f"  threads: {s['threads']}" if s["threads"] else ""),
        f"Hardware: {s['hardware']}",
        f"Batch: {s['batch']}  Warmup: {s['warmup']}  Iterations: {s['iterations']}  Timed: {s['timed']}",
        f"Throughput: {s['throughput_img_per_s']:.2f} img/s",
        (
            f"Latency: min = {s['min_ms']:.4f} ms, max = {s['max_ms']:.4f} ms, mean = {s['mean_ms']:.4f} ms, "
            f"median = {s['p50_ms']:.4f} ms, percentile(90%) = {s['p90_ms']:.4f} ms, "
            f"percentile(95%) = {s['p95_ms']:.4f} ms, percentile(99%) = {s['p99_ms']:.4f} ms"
        ),
    ]


@click.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--batch", type=BenchBatch, default=1, show_default=True, help="Batch size.")
@click.option("--iterations", type=click.IntRange(min=1), default=100, show_default=True, help="Timed runs.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs first."
)
@click.option("--min-duration", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="Keep timing until this many seconds have passed (and at least --iterations runs).")  # fmt: skip
@click.option("--threads", type=Threads, default=None,
              help="ONNX Runtime intra-op threads (default: the cores available to this process).")  # fmt: skip
@click.option("--provider", "providers", multiple=True,
              help="ONNX Runtime execution provider, e.g. cpu, cuda (repeatable; default cpu).")  # fmt: skip
@click.option("--timed", type=click.Choice(["compute", "host"]), default=None,
              help="compute: device-resident data (GPU only); host: numpy in/out incl. copies. "
              "Default: compute on a GPU, host on a CPU.")  # fmt: skip
@json_option("Print the latency statistics as one JSON object.")
def bench(
    model: Path, batch: int, iterations: int, warmup: int, min_duration: float, threads: int | None,
    providers: tuple[str, ...], timed: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Benchmark MODEL.onnx (ONNX Runtime) or a TensorRT ENGINE (.engine/.plan, needs a GPU and TensorRT).

    Runs --warmup untimed iterations, then at least --iterations timed ones on seeded inputs, and prints
    min/max/mean/median/p90/p95/p99 latency and throughput (img/s = batch / mean latency), stating what was
    timed and on which hardware. MODEL.onnx must take one float image batch (batch, C, H, W). Exit codes: 2 bad
    usage, 3 missing/invalid model (or one whose input is not a float image batch), 4 missing provider, GPU or
    TensorRT.
    """
    from wave_deploy.bench.runners import benchmark, open_runner

    if not model.exists():
        raise InvalidInputError(f"model {model} does not exist")
    runner = open_runner(model, providers=list(providers) or None, threads=threads)
    mode = {"compute": TIMED_COMPUTE, "host": TIMED_HOST_TO_HOST, None: None}[timed]
    try:
        stats = benchmark(runner, batch=batch, warmup=warmup, iterations=iterations, min_duration_s=min_duration,
                          timed=mode).to_dict()  # fmt: skip
    except MemoryError as exc:
        raise InvalidInputError(
            f"--batch {batch}: the inputs do not fit in this machine's memory ({exc})",
            hint="use a smaller --batch",
        ) from None
    if as_json:
        print_json({"model": str(model), **stats})
        return
    for line in _summary_lines(model, stats):
        echo(line)
