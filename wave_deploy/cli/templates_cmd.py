"""``wave-deploy templates``: inspect WAVE template banks. Heavy imports happen inside the commands."""

from __future__ import annotations

import functools

import click

from wave_deploy.cli.output import console, print_json, table


@click.group()
def templates() -> None:
    """Inspect WAVE template banks (the stored learngene every model size is initialized from)."""


@templates.command("info")
@click.argument("bank", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def info(bank: str, as_json: bool) -> None:
    """Show a bank's geometry, template and auxiliary-scaler counts and bytes, and provenance.

    BANK is a .safetensors bank file or a directory holding bank.safetensors. The bank is fully verified
    (schema version, sha256 and shape of every tensor); an invalid bank exits with code 3.
    """
    from wave_deploy.wave.bank import TemplateBank, file_summary

    loaded = TemplateBank.load(bank)
    data = {**file_summary(bank), **loaded.info()}
    if as_json:
        print_json(data)
        return
    say = functools.partial(console().print, markup=False)  # bank data is plain text, never rich markup
    geom = data["geometry"]
    say(f"{data['path']}  {data['file_bytes']:,} bytes  sha256 {data['file_sha256'][:16]}…")
    say(
        f"schema_version {data['schema_version']}  img_size {geom['img_size']}  patch_size "
        f"{geom['patch_size']}  in_chans {geom['in_chans']}  num_classes {geom['num_classes']}  "
        f"w {geom['w']}  head_dim {geom['head_dim']}  mlp_ratio {geom['mlp_ratio']}"
    )
    say(f"produces depth 1..{geom['max_depth']}, embed_dim in {data['valid_embed_dims']}")
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
    for key, value in sorted(data["provenance"].items()):
        say(f"  {key}: {value}")
