"""``wave-deploy templates``: build and inspect WAVE template banks. Heavy imports happen inside the commands."""

from __future__ import annotations

import functools

import click

from wave_deploy.cli.options import (
    FiniteFloat,
    Positive,
    batch_size_option,
    device_option,
    json_option,
    seed_option,
)
from wave_deploy.cli.output import console, is_quiet, print_json, table
from wave_deploy.cli.progress import TrainingProgress
from wave_deploy.errors import UsageError
from wave_deploy.spec import IMG_SIZE_MAX
from wave_deploy.wave.bank_file import file_summary, inspect_bank
from wave_deploy.wave.provenance import escape_control

# Stage-1 sizes: far above any ViT (ViT-G is 48 blocks of width 1664), low enough that a typo is refused
# before the auxiliary model is allocated.
Depth = click.IntRange(1, 256)
Width = click.IntRange(1, 16384)
Size = click.IntRange(1, IMG_SIZE_MAX)  # the bank's image size; patch, head and template sizes are within it
Count = click.IntRange(1, 4096)


@click.group()
def templates() -> None:
    """Build (stage 1) and inspect WAVE template banks, the stored learngene every size starts from."""


@templates.command("info")
@click.argument("bank", type=click.Path(dir_okay=True, path_type=str))
@json_option()
def info(bank: str, as_json: bool) -> None:
    """Show a bank's geometry, template and auxiliary-scaler counts and bytes, and provenance.

    BANK is a .safetensors bank file or a directory holding bank.safetensors. The bank is fully verified
    (header and metadata limits, schema version, shape, sha256 and finite values of every tensor) without
    importing torch; an invalid bank exits with code 3. Control characters in bank text are escaped.
    """

    checked = inspect_bank(bank)  # first: every problem with the file is exit 3 with one line
    data = {**file_summary(bank), **checked.info()}
    if as_json:
        print_json(data)  # json escapes every control character
        return
    say = functools.partial(console().print, markup=False)  # bank data is plain text, never rich markup
    geom = data["geometry"]
    say(f"{escape_control(data['path'])}  {data['file_bytes']:,} bytes  sha256 {data['file_sha256'][:16]}…")
    say(
        f"schema_version {data['schema_version']}  img_size {geom['img_size']}  patch_size "
        f"{geom['patch_size']}  in_chans {geom['in_chans']}  num_classes {geom['num_classes']}  "
        f"w {geom['w']}  head_dim {geom['head_dim']}  mlp_ratio {geom['mlp_ratio']}"
    )
    say(f"plan/build search depth 1..{geom['max_depth']}, embed_dim in {data['valid_embed_dims']}")
    say("init also makes deeper and wider sizes and other image sizes (docs/wave.md)")
    aux = data["aux_spec"]
    aux_text = "none" if aux is None else f"depth {aux['depth']} embed_dim {aux['embed_dim']}"
    say(f"auxiliary model: {aux_text}")
    rows = [
        [
            k["kind"],
            k["templates"],
            "x".join(map(str, k["template_shape"])),
            f"{k['template_numel']:,}",
            f"{k['template_bytes']:,}",
            "-" if k["aux_scaler_shape"] is None else "x".join(map(str, k["aux_scaler_shape"])),
            f"{k['aux_scaler_bytes']:,}",
        ]
        for k in data["kinds"]
    ]
    rows.append(
        [
            "total",
            "",
            "",
            f"{data['template_numel']:,}",
            f"{data['template_bytes']:,}",
            "",
            f"{data['aux_scaler_bytes']:,}",
        ]
    )
    kinds_table = table(
        "templates per kind", ["kind", "N", "template", "numel", "bytes", "aux scalers", "aux bytes"], rows
    )
    kinds_table.columns[0].no_wrap = True  # kind names are timm parameter names: never cut them
    say(kinds_table)
    say("provenance:")
    for line in provenance_lines(data["provenance"], escape_control):
        say(line)


def provenance_lines(value, escape, indent: int = 1, max_items: int = 20) -> list[str]:
    """Provenance as indented ``key: value`` lines; lists of plain values on one line; text escaped."""
    pad = "  " * indent
    lines = []
    for key, item in value.items():
        key = escape(key)
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines.extend(provenance_lines(item, escape, indent + 1, max_items))
        elif isinstance(item, list) and any(isinstance(v, (dict, list)) for v in item):
            lines.append(f"{pad}{key}:")
            for i, v in enumerate(item[:max_items]):
                lines.extend(provenance_lines({f"[{i}]": v}, escape, indent + 1, max_items))
            if len(item) > max_items:
                lines.append(f"{pad}  … {len(item) - max_items} more")
        elif isinstance(item, list) and not item:
            lines.append(f"{pad}{key}: -")
        elif isinstance(item, list):
            more = f", … {len(item) - max_items} more" if len(item) > max_items else ""
            lines.append(f"{pad}{key}: {', '.join(_scalar(v, escape) for v in item[:max_items])}{more}")
        else:
            lines.append(f"{pad}{key}: {_scalar(item, escape)}")
    return lines


def _scalar(value, escape) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):  # only an empty one gets here
        return "-"
    return escape(value)


@templates.command("build")
@click.option("--teacher", "teacher_name", help="Ancestry as a timm model name (e.g. deit_base_patch16_224).")
@click.option(
    "--pretrained",
    is_flag=True,
    help="With --teacher: timm's pretrained weights, fetched from the Hugging Face hub once and cached "
    "(HF_HOME; offline: HF_HUB_OFFLINE=1 with a populated cache). A head that does not predict the "
    "data's classes is replaced by a linear probe fitted on the training split.",
)
@click.option(
    "--teacher-checkpoint",
    type=click.Path(dir_okay=False, path_type=str),
    help="Ancestry from a local file: a wave-deploy folded checkpoint, or with --teacher-arch a timm "
    "state dict (.safetensors, or a torch file read with weights_only=True).",
)
@click.option(
    "--teacher-arch", help="timm architecture of --teacher-checkpoint when it is a plain state dict."
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=str),
    help="ImageFolder tree; default: the built-in MNIST-5k. Resized to the bank's image size at load.",
)
@click.option(
    "--classes",
    help="Comma-separated class names or indices to keep (e.g. 0,1,2,3,4): build the bank "
    "on a subset, e.g. to measure transfer to the classes left out.",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=str), help="Bank file (.safetensors) or directory."
)
@click.option(
    "--img-size",
    type=Size,
    help="Bank image size. Default: the teacher's input size (else the data's).",
)
@click.option(
    "--in-chans",
    type=click.Choice(["1", "3"]),
    help="Bank channels; image folders are converted at load. Default: the data's (a 3-channel teacher "
    "gets grey images repeated to 3 channels).",
)
@click.option(
    "--patch-size",
    type=Size,
    help="Patch size. Default: a ViT teacher's; otherwise the divisor of the image size nearest to "
    "image size / 14, at least 4.",
)
@click.option(
    "--head-dim", type=Size, help="Head size (embed_dim / heads). Default: a ViT teacher's; otherwise 32."
)
@click.option(
    "--mlp-ratio",
    type=FiniteFloat(min=0, min_open=True, max=64),
    help="MLP hidden size / width. Default: a ViT teacher's; otherwise 4.",
)
@click.option("--template-size", "w", type=Size, help="Template size w. Default: the head size.")
@click.option(
    "--aux-depth",
    type=Depth,
    help="Depth of the auxiliary model. Default: the teacher's depth, at most 12 (DeiT-Small); 6 for a "
    "teacher that is not a ViT.",
)
@click.option(
    "--aux-embed-dim",
    type=Width,
    help="Width of the auxiliary model. Default: the teacher's width, at most 384 (DeiT-Small), rounded "
    "down to a width the bank serves; 128 for a teacher that is not a ViT.",
)
@click.option(
    "--templates-per-kind",
    "n_matrix",
    type=Count,
    default=16,
    show_default=True,
    help="Templates per matrix kind.",
)
@click.option(
    "--vector-templates",
    "n_vector",
    type=Count,
    default=4,
    show_default=True,
    help="Templates per vector kind.",
)
@click.option(
    "--max-depth", type=Depth, help="Deepest target the bank serves (default: the auxiliary depth)."
)
@click.option(
    "--elastic/--no-elastic",
    default=True,
    show_default=True,
    help="Also train one sampled sub-size per step, so sliced targets start as working models.",
)
@click.option(
    "--epochs",
    type=FiniteFloat(min=0, min_open=True),
    help="Training budget in epochs (default 20 unless --steps).",
)
@click.option("--steps", type=Positive, help="Training budget in optimizer steps.")
@batch_size_option(help="Global batch size.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-3, show_default=True)
@click.option(
    "--tau",
    type=FiniteFloat(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Distillation temperature.",
)
@click.option(
    "--alpha",
    type=FiniteFloat(0, 1),
    default=0.7,
    show_default=True,
    help="Weight of the distillation term; 1 - alpha weights cross-entropy on labels.",
)
@seed_option()
@click.option(
    "--allow-weak-teacher",
    is_flag=True,
    help="Distil a teacher whose validation accuracy is near chance (recorded in the bank's provenance). "
    "Near chance: not above chance by a one-sided exact binomial test at p < 0.01, or below "
    "1.5 x chance (capped half-way to 100%); chance is the largest class share of the validation split.",
)
@click.option(
    "--max-hours",
    type=FiniteFloat(min=0, min_open=True),
    default=4.0,
    show_default=True,
    help="Stop before training (exit 3) when the estimated run is longer.",
)
@click.option(
    "--estimate-steps",
    type=click.IntRange(0, 100),
    default=2,
    show_default=True,
    help="Real steps timed (after 1 warm-up) for the estimate; 0: no estimate and no --max-hours check.",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=str),
    help="Write training checkpoints here (default: <out>.ckpt/).",
)
@click.option(
    "--checkpoint-every", type=Positive, default=100, show_default=True, help="Steps between checkpoints."
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir.")
@device_option()
@json_option("Print one JSON summary on stdout (progress lines stay on stderr).")
def build(**opts) -> None:
    """Build a template bank by distilling an ancestry model into an auxiliary WAVE model (stage 1).

    \b
    The bank's geometry comes from the teacher unless an option sets it:
      image size   the teacher's input size (else the data's); the data are resized to it at load
      channels     the data's (a 3-channel teacher is fed grey images repeated to 3 channels)
      patch, head size, MLP ratio   a timm ViT teacher's; otherwise patch ~img_size/14 (>= 4), head 32, MLP 4
      template size w               the head size (64 for ImageNet-class 224 px ViTs)
      auxiliary model   the teacher's depth and width capped at DeiT-Small (12, 384); else depth 6, width 128

    Before training: the teacher's validation accuracy is measured (a pretrained head that does not predict
    the data's classes is replaced by a linear probe on the training split); near chance the run stops with
    exit 3 unless --allow-weak-teacher. Then a few real steps are timed: the estimated wall time and peak
    memory are printed on stderr (and under "estimate" with --json), and a run over --max-hours stops with
    exit 3 naming what would shorten it.

    Runs under `torchrun --nproc_per_node N wave-deploy templates build ...` for several GPUs or nodes
    (DistributedDataParallel; --batch-size is the global batch; only rank 0 writes).
    """
    from wave_deploy.training import distributed
    from wave_deploy.wave.stage1.learngene import Stage1Checks, build_bank_file

    config = _learngene_config(opts)
    quiet = is_quiet() or not distributed.is_main_process()  # --json keeps progress on stderr
    err = console(stderr=True)

    def note(text: str) -> None:
        if not quiet:
            err.print(text, markup=False, highlight=False, soft_wrap=True)

    classes = opts["classes"]
    with TrainingProgress("stage 1: templates", disable=quiet) as bar:
        result = build_bank_file(
            opts["out"],
            config,
            teacher_name=opts["teacher_name"],
            pretrained=opts["pretrained"],
            teacher_checkpoint=opts["teacher_checkpoint"],
            teacher_arch=opts["teacher_arch"],
            data_path=opts["data_path"],
            classes=[int(c) if c.strip().isdigit() else c.strip() for c in classes.split(",")]
            if classes
            else None,
            checks=Stage1Checks(opts["allow_weak_teacher"], opts["max_hours"], opts["estimate_steps"]),
            checkpoint_dir=opts["checkpoint_dir"],
            checkpoint_every=opts["checkpoint_every"],
            resume=opts["resume"],
            on_step=bar,
            on_note=note,
            device=opts["device"],
        )
    if result is None:  # not the main process of a torchrun launch
        return
    if opts["as_json"]:
        print_json(result)
    else:
        note(f"bank written to {result['bank']}; val accuracy {result['accuracies']}")


def _learngene_config(opts: dict):
    """The LearngeneConfig of `templates build`'s options (geometry left None where not given)."""
    from wave_deploy.wave.stage1.learngene import LearngeneConfig

    if (opts["teacher_name"] is None) == (opts["teacher_checkpoint"] is None):
        raise UsageError("give exactly one of --teacher NAME or --teacher-checkpoint FILE")
    if opts["teacher_arch"] and not opts["teacher_checkpoint"]:
        raise UsageError("--teacher-arch goes with --teacher-checkpoint")
    if opts["pretrained"] and not opts["teacher_name"]:
        raise UsageError("--pretrained goes with --teacher NAME")
    if opts["steps"] is not None and opts["epochs"] is not None:
        raise UsageError("give --steps or --epochs, not both")
    names = [
        *("aux_depth", "aux_embed_dim", "w", "head_dim", "patch_size", "mlp_ratio", "img_size", "n_matrix"),
        *("n_vector", "max_depth", "elastic", "steps", "epochs", "batch_size", "lr", "tau", "alpha", "seed"),
    ]
    in_chans = opts["in_chans"]
    return LearngeneConfig(
        **{k: opts[k] for k in names}, in_chans=None if in_chans is None else int(in_chans)
    )
