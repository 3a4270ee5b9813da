"""Click options made from the typed option models of ``wave_deploy.options`` (each option is declared there
once: its help, its bounds or choices, its flag), plus the few bounds of options no job model has.

A value out of range is a usage error (exit 2) from click itself, before any work. Nothing here imports torch.

The numeric limits are the ones the library can honour:
- seeds: 0 .. 2**32 - 1; ONNX opsets: 17 (LayerNormalization) .. 23 (wave_deploy.options);
- runtime threads: 1 .. 1024; benchmark batches: 1 .. 65536.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from typing import Any

import annotated_types
import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from wave_deploy.options import MAX_OPSET, MIN_OPSET, SEED_MAX, BuildOptions, PlanOptions

__all__ = ["MAX_OPSET", "MIN_OPSET", "SEED_MAX", "model_options", "option_for"]


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (click's own range lets nan through every bound)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


NonNegative = click.IntRange(min=0)
Positive = click.IntRange(min=1)
MAX_THREADS = 1024  # ONNX Runtime creates each thread up front: a typo such as 100000 would hang the machine
Threads = click.IntRange(1, MAX_THREADS)
MAX_BENCH_BATCH = 65536
BenchBatch = click.IntRange(1, MAX_BENCH_BATCH)


def _bounds(field) -> dict[str, Any]:
    """ge/gt/le/lt of a pydantic field as click range arguments."""
    out: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            out["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            out["min"], out["min_open"] = item.gt, True
        elif isinstance(item, annotated_types.Le):
            out["max"] = item.le
        elif isinstance(item, annotated_types.Lt):
            out["max"], out["max_open"] = item.lt, True
    return out


def _base(annotation: Any) -> Any:
    """``int | None`` -> int; ``tuple[int, ...]`` -> tuple[int, ...]; other annotations unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def option_for(
    model: type[BaseModel], name: str, *, dest: str | None = None, help: str | None = None
) -> Callable:
    """The click option of one field of an options model: flag, type, bounds, default and help from the field.

    ``dest``: the parameter name the command receives (default: the field's); ``help``: for a command whose
    option means the same value in its own context (e.g. calibrate's --img-size: the size measured at)."""
    field = model.model_fields[name]
    extra: dict[str, Any] = dict(field.json_schema_extra or {})  # type: ignore[arg-type]
    flag = extra.get("flag", "--" + name.replace("_", "-"))
    base = _base(field.annotation)
    required = field.default is PydanticUndefined
    kwargs: dict[str, Any] = {"help": help or field.description, "required": required}
    if not required:
        kwargs["default"] = field.default
        kwargs["show_default"] = not (field.default is None or field.default is False or field.default == ())
    bounds = _bounds(field)
    if base is bool:
        kwargs["is_flag"] = True
        kwargs["show_default"] = "/" in flag  # --engine/--no-engine shows which is the default
    elif typing.get_origin(base) is typing.Literal:
        kwargs["type"] = click.Choice(list(typing.get_args(base)))
    elif base is int:
        kwargs["type"] = click.IntRange(**bounds)
    elif base is float:
        kwargs["type"] = FiniteFloat(**bounds)
    elif base is str and extra.get("path"):
        kwargs["type"] = click.Path(
            path_type=str
        )  # dir_okay=False: the model refuses a directory (API alike)
    elif typing.get_origin(base) is tuple:
        kwargs["multiple"] = True
        kwargs["default"] = ()
    if "metavar" in extra:
        kwargs["metavar"] = extra["metavar"]
    return click.option(flag, dest or name, **kwargs)


def model_options(model: type[BaseModel], *names: str, skip: tuple[str, ...] = ()) -> Callable:
    """Decorate a click command with the options of ``model``'s fields ``names`` (default: all, in declared
    order, except ``skip``); the command receives them as keyword arguments named like the fields."""
    chosen = names or tuple(n for n in model.model_fields if n not in skip)

    def decorate(fn: Callable) -> Callable:
        for name in reversed(chosen):
            fn = option_for(model, name)(fn)
        return fn

    return decorate


# `--set` on `profiles show` and `calibrate` (plan and build take it from their models): profiles.apply_overrides
# reads it.
profile_set_option = option_for(PlanOptions, "profile_overrides", dest="overrides")


def seed_option(help: str | None = None) -> Callable:
    """--seed for commands without a job model (templates build, calibrate): the same bounds as every seed."""
    option = option_for(BuildOptions, "seed")
    if help is None:
        return option
    return click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True, help=help)


def batch_size_option(default: int = 128, help: str | None = None) -> Callable:
    field = BuildOptions.model_fields["batch_size"]
    return click.option(
        "--batch-size", type=click.IntRange(**_bounds(field)), default=default, show_default=True,
        help=help or field.description,
    )  # fmt: skip


def device_option() -> Callable:
    return option_for(BuildOptions, "device")


def json_option(help: str = "Print one JSON object on stdout.") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)
