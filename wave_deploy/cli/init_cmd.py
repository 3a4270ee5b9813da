"""``wave-deploy init``: initialize one ViT size from a template bank (WAVE stage 2) and fold it into timm."""

from __future__ import annotations

import click

from wave_deploy.cli.options import (
    Positive,
    batch_size_option,
    compile_option,
    device_option,
    json_option,
    out_dir_option,
    seed_option,
    steps_option,
)
from wave_deploy.cli.output import console, is_quiet, print_json


@click.command("init")
@click.option(
    "--templates",
    "bank_path",
    type=click.Path(path_type=str),
    help="Template bank (.safetensors); default: the bank shipped with wave-deploy.",
)
@click.option("--depth", type=Positive, required=True, help="Number of transformer blocks L.")
@click.option(
    "--embed-dim", type=Positive, required=True, help="Width D (a multiple of the bank's template size)."
)
@click.option("--heads", type=Positive, help="Attention heads (default: D / the bank's head_dim).")
@click.option(
    "--img-size",
    type=Positive,
    help="Input size in pixels (a multiple of the bank's patch size); default: the bank's. The data is "
    "resized to it at load and the position embedding is resampled.",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=str),
    help="ImageFolder tree; default: the built-in MNIST-5k. A new class set gets a fresh head.",
)
@click.option(
    "--strategy",
    type=click.Choice(["aux", "random"]),
    default="aux",
    show_default=True,
    help="Scaler start: slice the bank's auxiliary scalers, or random.",
)
@steps_option("--scaler-steps", 100, "Scaler-only training steps.")
@steps_option("--dense-steps", 0, "Full training steps after folding (0: fold right after the scaler phase).")
@batch_size_option()
@seed_option()
@device_option()
@compile_option()
@out_dir_option(
    required=True, help="Output directory: model.safetensors (timm state dict + spec) and init.json."
)
@json_option("Print the init record as JSON on stdout.")
def init(
    bank_path,
    depth,
    embed_dim,
    heads,
    img_size,
    data_path,
    strategy,
    scaler_steps,
    dense_steps,
    batch_size,
    seed,
    device,
    compile_steps,
    out,
    as_json,
) -> None:
    """Initialize a ViT of depth L and width D from weight templates and write a plain timm checkpoint."""
    from pathlib import Path

    from wave_deploy.cli.progress import TrainingProgress
    from wave_deploy.spec import ViTSpec
    from wave_deploy.wave.init import init_model

    with TrainingProgress("stage 2: init", disable=is_quiet() or as_json) as bar:
        record = init_model(
            out,
            depth=depth,
            embed_dim=embed_dim,
            heads=heads,
            img_size=img_size,
            bank_path=bank_path,
            data_path=data_path,
            strategy=strategy,
            scaler_steps=scaler_steps,
            dense_steps=dense_steps,
            batch_size=batch_size,
            seed=seed,
            device=device,
            compile=compile_steps,
            on_step=bar,
        )
    if as_json:
        print_json(record)
    else:
        console(stderr=True).print(
            f"{ViTSpec.from_dict(record['spec']).name}: val acc {record['val_acc']:.2%} "
            f"(at init {record['val_acc_at_init']:.2%}) -> {Path(out) / 'model.safetensors'}",
            markup=False,
        )
