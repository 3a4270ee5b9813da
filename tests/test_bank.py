"""TemplateBank files: exact round trip, verification of every tensor, and refusal of bad files (exit 3)."""

import json
import subprocess
import sys

import pytest
import torch
from _banks import TINY
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from wave_deploy.cli.main import cli
from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.bank import METADATA_KEY, TemplateBank
from wave_deploy.wave.geometry import ALL_KINDS, BankGeometry, kind_layouts, template_shape


def _geometry(**changes):
    return BankGeometry.create(**{**TINY, "max_depth": 6, **changes})


def _bank(with_aux=True):
    geom = _geometry()
    bank = TemplateBank.init_random(geom, seed=0, provenance={"ancestry": "test", "seeds": [0, 1]})
    if with_aux:
        aux = geom.make_spec(depth=2, embed_dim=16)
        gen = torch.Generator().manual_seed(1)
        bank.aux_spec = aux
        bank.aux_scalers = {
            k: torch.randn(lay.scaler_shape(geom.templates[k], aux.depth), generator=gen)
            for k, lay in kind_layouts(geom, aux).items()
        }
        bank.validate()
    return bank


def _rewrite(path, edit_meta=None, edit_tensors=None):
    """Re-save a bank file with edited metadata and/or tensors (hashes left as they were)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()[METADATA_KEY])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def _raises_invalid(path, match, **kwargs):
    with pytest.raises(InvalidInputError, match=match) as info:
        TemplateBank.load(path, **kwargs)
    assert info.value.exit_code == EXIT_INVALID_INPUT
    return info.value


def test_save_load_round_trip_is_exact(tmp_path):
    bank = _bank()
    path = bank.save(tmp_path / "b.safetensors")
    loaded = TemplateBank.load(path)
    assert loaded.geometry == bank.geometry and loaded.aux_spec == bank.aux_spec
    assert loaded.provenance == {"ancestry": "test", "seeds": [0, 1]}
    for kind in ALL_KINDS:
        assert torch.equal(loaded.templates[kind], bank.templates[kind])
        assert torch.equal(loaded.aux_scalers[kind], bank.aux_scalers[kind])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it


def test_directory_path_saves_and_loads_bank_safetensors(tmp_path):
    path = _bank(with_aux=False).save(tmp_path / "mybank")
    assert path == tmp_path / "mybank" / "bank.safetensors"
    assert TemplateBank.load(tmp_path / "mybank").aux_spec is None


def test_load_missing_file_is_invalid_input(tmp_path):
    _raises_invalid(tmp_path / "nope.safetensors", "not found")


def test_load_truncated_file_is_invalid_input(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises_invalid(path, "not a readable safetensors file")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this object creates the marker file
        return (open, (self.marker, "w"))


def test_pickle_renamed_to_safetensors_is_refused_without_executing_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.safetensors"
    torch.save({"templates/attn.qkv.weight": _Payload(str(marker))}, path)
    _raises_invalid(path, "not a readable safetensors file")
    assert not marker.exists()
    assert _pickle_calls(path) >= {"open"}  # the bytes really hold a call that unpickling would run


def _pickle_calls(path) -> set[str]:
    """Names of the callables a torch.save zip's pickle would call when loaded, read without loading it."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    calls, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if isinstance(arg, str):
            strings.append(arg)
        if op.name == "STACK_GLOBAL":
            calls.add(strings[-1])
        elif op.name == "GLOBAL":
            calls.add(arg.split()[-1])
    return calls


def test_wrong_schema_version_is_refused(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")
    _rewrite(path, edit_meta=lambda m: m.update(schema_version=99))
    _raises_invalid(path, "schema_version 99")


def test_edited_tensor_bytes_fail_the_hash_check(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55  # inside the last tensor's raw data
    path.write_bytes(bytes(data))
    _raises_invalid(path, "does not match its sha256")


def test_tensor_shapes_that_disagree_with_geometry_are_refused(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")
    _rewrite(path, edit_meta=lambda m: m["geometry"]["templates"].update({"mlp.fc1.weight": 5}))
    _raises_invalid(path, r"templates/mlp.fc1.weight has shape \(3, 8, 8\).*\(5, 8, 8\)")


def test_missing_tensor_is_refused_even_with_consistent_hashes(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")

    def drop(meta):
        del meta["sha256"]["templates/pos_embed"]

    _rewrite(path, edit_meta=drop, edit_tensors=lambda t: t.pop("templates/pos_embed"))
    _raises_invalid(path, "missing")


def test_plain_safetensors_without_bank_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    _raises_invalid(path, "not a wave-deploy template bank")


def test_load_with_unproducible_spec_explains_every_reason(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")
    bad = ViTSpec(depth=300, embed_dim=20, num_heads=2, patch_size=4, img_size=8, in_chans=1)
    err = _raises_invalid(path, "cannot produce", spec=bad)
    assert "multiple of the template size w=8" in err.message
    assert "head_dim=8" in err.message and "depth=300 exceeds the largest target" in err.message
    TemplateBank.load(
        path,
        spec=ViTSpec(depth=6, embed_dim=48, num_heads=6, patch_size=4, img_size=8, in_chans=1, num_classes=3),
    )


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"embed_dim": 8200, "num_heads": 1025}, "embed_dim=8200 exceeds the largest target"),
        ({"img_size": 8192}, "img_size=8192 exceeds"),
        ({"patch_size": 2}, "patch_size"),
        ({"in_chans": 3}, "in_chans"),
        ({"mlp_ratio": 2.0}, "mlp_ratio"),
        ({"embed_dim": 12, "num_heads": 1}, "multiple of the template size"),
    ],
)
def test_geometry_names_the_reason_a_spec_cannot_be_produced(change, reason):
    geom = _geometry(max_embed_dim=48)
    spec = geom.make_spec(depth=2, embed_dim=16).replace(**change)
    assert any(reason in p for p in geom.problems(spec))
    with pytest.raises(InvalidInputError, match=reason):
        geom.check_spec(spec)


def test_make_spec_defaults_heads_from_head_dim_and_lists_valid_widths():
    geom = _geometry()
    assert geom.make_spec(depth=3, embed_dim=24).num_heads == 3
    assert geom.valid_embed_dims() == [8, 16, 24, 32, 40, 48]
    for d in geom.valid_embed_dims():
        assert geom.problems(geom.make_spec(depth=1, embed_dim=d)) == []


def test_template_shapes_follow_geometry():
    geom = _geometry(in_chans=3, img_size=16)
    assert template_shape(geom, "attn.qkv.weight") == (8, 8)
    assert template_shape(geom, "patch_embed.proj.weight") == (8, 3 * 4 * 4)
    assert template_shape(geom, "pos_embed") == (17, 8)
    assert template_shape(geom, "head.weight") == (10, 8)
    assert template_shape(geom, "norm1.bias") == (8,)


def test_aux_scalers_of_wrong_shape_are_refused():
    bank = _bank()
    bank.aux_scalers["attn.qkv.weight"] = torch.zeros(2, 3, 6, 3)
    with pytest.raises(InvalidInputError, match="aux_scalers/attn.qkv.weight"):
        bank.validate()


def test_templates_info_json_reports_counts_and_bytes(tmp_path):
    bank = _bank()
    path = bank.save(tmp_path / "b.safetensors")
    result = CliRunner().invoke(cli, ["templates", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    numel = sum(t.numel() for t in bank.templates.values())
    aux = sum(t.numel() for t in bank.aux_scalers.values())
    assert data["template_numel"] == numel and data["template_bytes"] == 4 * numel
    assert data["aux_scaler_numel"] == aux and data["aux_scaler_bytes"] == 4 * aux
    assert data["geometry"]["w"] == 8 and data["aux_spec"]["depth"] == 2
    assert data["provenance"]["ancestry"] == "test" and data["file_bytes"] == path.stat().st_size
    assert {k["kind"] for k in data["kinds"]} == set(ALL_KINDS)


def test_templates_info_human_output_lists_kinds(tmp_path):
    path = _bank().save(tmp_path / "b.safetensors")
    result = CliRunner().invoke(cli, ["templates", "info", str(path)])
    assert result.exit_code == 0, result.output
    assert "attn.qkv.weight" in result.output and "ancestry: test" in result.output


def test_templates_info_on_bad_bank_exits_3_with_one_line(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 5)
    result = CliRunner().invoke(cli, ["templates", "info", str(path)])
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "error:" in result.output and "Traceback" not in result.output


def test_templates_cli_module_does_not_import_torch():
    code = "import sys, wave_deploy.cli.templates_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
