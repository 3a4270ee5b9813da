"""``wave-deploy init``: initialize one ViT size from a template bank (WAVE stage 2) and fold it into timm.

The options are ``wave_deploy.options.InitOptions`` (the same model as ``wave_deploy.init``'s keyword
arguments); the work is ``wave_deploy.wave.init.init_model``.
"""

from __future__ import annotations

from pathlib import Path

import click

from wave_deploy.cli.options import json_option, model_options
from wave_deploy.cli.output import console, is_quiet, print_json
from wave_deploy.cli.progress import TrainingProgress
from wave_deploy.options import InitOptions, parse
from wave_deploy.spec import ViTSpec


@click.command("init")
@model_options(InitOptions)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=str),  # a file there: exit 3 from the writability check
    help="Output directory: model.safetensors (timm state dict + spec) and init.json.",
)
@json_option("Print the init record as JSON on stdout.")
def init(out, as_json, **fields) -> None:
    """Initialize a ViT of depth L and width D from weight templates and write a plain timm checkpoint."""

    from wave_deploy.wave.init import init_model

    options = parse(InitOptions, fields, "init")
    with TrainingProgress("stage 2: init", disable=is_quiet()) as bar:
        record = init_model(out, options, on_step=bar)
    if as_json:
        print_json(record)
    else:
        console(stderr=True).print(
            f"{ViTSpec.from_dict(record['spec']).name}: val acc {record['val_acc']:.2%} "
            f"(at init {record['val_acc_at_init']:.2%}) -> {Path(out) / 'model.safetensors'}",
            markup=False,
        )
