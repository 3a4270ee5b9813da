"""``wave-deploy init``: initialize one ViT size from a template bank (WAVE stage 2) and fold it into timm."""

from __future__ import annotations

import click

from wave_deploy.cli.options import (
    Positive,
    batch_size_option,
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
@out_dir_option(
    required=True, help="Output directory: model.safetensors (timm state dict + spec) and init.json."
)
@json_option("Print the init record as JSON on stdout.")
def init(
    bank_path,
    depth,
    embed_dim,
    heads,
    data_path,
    strategy,
    scaler_steps,
    dense_steps,
    batch_size,
    seed,
    device,
    out,
    as_json,
) -> None:
    """Initialize a ViT of depth L and width D from weight templates and write a plain timm checkpoint."""
    from pathlib import Path

    from wave_deploy import data as datasets
    from wave_deploy.cli.progress import TrainingProgress
    from wave_deploy.fileio import check_writable_dir, remove_stale_parts, write_json
    from wave_deploy.folding import save_folded
    from wave_deploy.wave.bank import TemplateBank, default_bank_path
    from wave_deploy.wave.init import DensePhase, ScalerPhase, initialize

    check_writable_dir(out, "--out")  # before any work: exit 3 naming the path
    remove_stale_parts(out)  # temporary files of a killed earlier run
    bank = TemplateBank.load(bank_path or default_bank_path())
    geom = bank.geometry
    data = datasets.load_for_bank(data_path, in_chans=geom.in_chans, img_size=geom.img_size, seed=seed)
    spec = geom.make_spec(depth, embed_dim, heads, num_classes=data.info.num_classes)
    with TrainingProgress("stage 2: init", disable=is_quiet() or as_json) as bar:
        model, record = initialize(
            bank,
            spec,
            data,
            strategy=strategy,
            scaler=ScalerPhase(steps=scaler_steps, batch_size=batch_size, seed=seed),
            dense=DensePhase(steps=dense_steps, batch_size=batch_size, seed=seed),
            on_step=bar,
            device=device,
        )
    out_dir = Path(out)
    record["bank"] = str(bank_path or default_bank_path())
    record["data"] = data.info.to_dict()
    save_folded(out_dir / "model.safetensors", model.state_dict(), spec, {"init": {"strategy": strategy}})
    write_json(out_dir / "init.json", record)
    if as_json:
        print_json(record)
    else:
        console(stderr=True).print(
            f"{spec.name}: val acc {record['val_acc']:.2%} (at init {record['val_acc_at_init']:.2%}) -> "
            f"{out_dir / 'model.safetensors'}",
            markup=False,
        )
