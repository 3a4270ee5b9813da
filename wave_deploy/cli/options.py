"""Click options shared by several commands, each range-checked by click itself (a value out of range is a
usage error, exit 2, before any work). Nothing here imports torch.

The numeric limits are the ones the library can honour:
- seeds: 0 .. 2**32 - 1 (every seed feeds torch, numpy or a derived seed such as ``seed * 1_000_003 + step``
  that must still fit torch's 64-bit generator);
- ONNX opsets: 17 (LayerNormalization) .. 23, the newest that both torch exporters (the legacy one stops at
  23) and the installed ONNX Runtime accept;
- runtime threads: 1 .. 1024; benchmark batches: 1 .. 65536.
"""

from __future__ import annotations

import math
from typing import Any

import click

SEED_MAX = 2**32 - 1
MIN_OPSET = 17
MAX_OPSET = 23
DEFAULT_OPSET = 18


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (click's own range lets nan through every bound)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


Seed = click.IntRange(0, SEED_MAX)
NonNegative = click.IntRange(min=0)
Positive = click.IntRange(min=1)
Opset = click.IntRange(MIN_OPSET, MAX_OPSET)
MAX_THREADS = 1024  # ONNX Runtime creates each thread up front: a typo such as 100000 would hang the machine
Threads = click.IntRange(1, MAX_THREADS)
MAX_BENCH_BATCH = 65536
BenchBatch = click.IntRange(1, MAX_BENCH_BATCH)


def seed_option(help: str | None = None):
    return click.option("--seed", type=Seed, default=0, show_default=True, help=help or "Random seed.")


def json_option(help: str = "Print one JSON object on stdout."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def batch_size_option(default: int = 128, help: str | None = None):
    return click.option("--batch-size", type=Positive, default=default, show_default=True, help=help)


def steps_option(name: str, default: int, help: str):
    """A count of training steps (``--scaler-steps``, ``--dense-steps``): an integer >= 0."""
    return click.option(name, type=NonNegative, default=default, show_default=True, help=help)


def objective_option(scored_on: str):
    """--objective of plan and build; ``scored_on`` names the data the accuracy objective scores on."""
    return click.option(
        "--objective",
        type=click.Choice(["flops", "params", "accuracy"]),
        default="flops",
        show_default=True,
        help="What to maximize among the sizes that fit. accuracy: each size's accuracy sliced from the bank, "
        f"scored on the validation split of {scored_on} (seconds; cached), ties to lower latency.",
    )


def opset_option():
    return click.option(
        "--opset",
        type=Opset,
        default=DEFAULT_OPSET,
        show_default=True,
        help="ONNX opset.",
    )


def exporter_option():
    return click.option(
        "--exporter",
        type=click.Choice(["dynamo", "legacy"]),
        default="dynamo",
        show_default=True,
        help="torch.onnx exporter: dynamo (torch.export) or legacy (TorchScript tracing).",
    )


def device_option(help: str | None = None):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help=help or "Where to train (auto: CUDA when present).",
    )


def compile_option():
    return click.option(
        "--compile",
        "compile_steps",
        is_flag=True,
        help="torch.compile the training steps (inductor: a C++ compiler on the CPU, Triton on CUDA). "
        "The first step of each phase pays the compilation (tens of seconds); worth it for long runs on a "
        "GPU, see docs/benchmarks.md. Off by default.",
    )


def out_dir_option(*param_decls: str, required: bool = False, default: str | None = None, help: str):
    """An output directory; its writability is checked by the command before any work
    (``wave_deploy.fileio.check_writable_dir``)."""
    # No default=None for a required option: click >= 8.3 takes an explicit None as a value given, so the
    # option would never be reported missing (init without --out reached the command with out=None).
    defaults: dict[str, Any] = {} if default is None else {"default": default, "show_default": True}
    return click.option(
        *(param_decls or ("--out",)),
        required=required,
        type=click.Path(path_type=str),  # a file there: exit 3 from the writability check
        help=help,
        **defaults,
    )
