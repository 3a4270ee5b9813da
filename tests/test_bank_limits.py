"""The bank loader's limits: finite values, bounded geometry and metadata, escaped text, portable provenance,
and the torch-free readers behind `templates info` and `plan` (issue 13 deliverable 3, issue 14)."""

import hashlib
import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch
from _bank_files import join, meta_of, split, with_geometry, with_meta, with_values, write
from _banks import mnist_bank_file, random_bank
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.bank_file import MAX_JSON_DEPTH, inspect_bank
from wave_deploy.wave.bank_values import MAX_ABS_VALUE
from wave_deploy.wave.geometry import MAX_SIZES, BankGeometry
from wave_deploy.wave.provenance import escape_control, portable_command, portable_path, portable_provenance

# sha256 of the sorted "name sha256(tensor bytes)" lines of the shipped bank: the tensors stage 1 trained.
# Rewriting the bank's provenance (scripts/rewrite_bank_provenance.py) must leave this unchanged.
SHIPPED_TENSORS_DIGEST = "256e2e6351cb67dee47cb2c14281acc6a1e6416b1326e1892cc39268eda402a3"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Bytes of a small valid bank with auxiliary scalers (the MNIST geometry of the built-in data)."""
    return mnist_bank_file(tmp_path_factory.mktemp("bank")).read_bytes()


def _cli(*args, limit_s=60, memory_bytes=None):
    """The real CLI in a fresh process (optionally under an address-space limit)."""

    def limit():
        if memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return subprocess.run(
        [sys.executable, "-m", "wave_deploy.cli.main", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=limit_s,
        preexec_fn=limit,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_nan_bank_makes_templates_info_exit_3_naming_the_file_and_tensor(good, tmp_path):
    path = write(
        tmp_path, "nan.safetensors", with_values(good, "templates/mlp.fc1.weight", lambda v: v.fill(np.nan))
    )
    result = _cli("templates", "info", str(path))
    assert result.returncode == EXIT_INVALID_INPUT and result.stdout == ""
    line = _one_error_line(result)
    assert str(path) in line and "templates/mlp.fc1.weight" in line and "NaN/Inf" in line


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_one_non_finite_aux_scaler_is_refused_by_every_reader(good, tmp_path, value):
    def poke(v):
        v[3] = value

    path = write(tmp_path, "b.safetensors", with_values(good, "aux_scalers/attn.qkv.weight", poke))
    for load in (TemplateBank.load, inspect_bank):
        with pytest.raises(
            InvalidInputError, match=r"aux_scalers/attn.qkv.weight holds 1 NaN/Inf value\(s\)"
        ):
            load(path)


def test_max_embed_dim_of_10_to_the_12_exits_3_quickly_in_bounded_memory(good, tmp_path):
    path = write(tmp_path, "huge.safetensors", with_geometry(good, max_embed_dim=10**12))
    # 10 s and 1 GiB of address space: the old loader listed every width up to 10^12 (GiBs in a minute)
    result = _cli("templates", "info", str(path), limit_s=10, memory_bytes=1 << 30)
    assert result.returncode == EXIT_INVALID_INPUT
    assert "max_embed_dim" in _one_error_line(result)


def test_max_depth_of_10_million_makes_plan_exit_3_instead_of_hanging(good, tmp_path):
    path = write(tmp_path, "deep.safetensors", with_geometry(good, max_depth=10**7))
    result = _cli("plan", "--profile", "jetson", "--templates", str(path), limit_s=30)
    assert result.returncode == EXIT_INVALID_INPUT
    assert "max_depth" in _one_error_line(result)


def test_init_on_a_nan_bank_exits_3_and_writes_no_model(good, tmp_path):
    path = write(
        tmp_path, "nan.safetensors", with_values(good, "templates/pos_embed", lambda v: v.fill(np.nan))
    )
    out = tmp_path / "model"
    args = ["init", "--templates", str(path), "--depth", "1", "--embed-dim", "16", "--scaler-steps", "0"]
    result = CliRunner().invoke(cli, [*args, "--dense-steps", "0", "--out", str(out)])
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert "templates/pos_embed" in result.output and not out.exists()


def test_all_nan_bank_is_refused_before_any_expansion(good, tmp_path):
    data = good
    for name in split(good)[0]:
        if name != "__metadata__":
            data = with_values(data, name, lambda v: v.fill(np.nan))
    with pytest.raises(InvalidInputError, match="NaN/Inf"):
        TemplateBank.load(write(tmp_path, "b.safetensors", data))


def test_deeply_nested_metadata_is_exit_3_not_recursion_error(good, tmp_path):
    header, area = split(good)
    meta = json.dumps(meta_of(header))
    deep = meta[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = write(tmp_path, "deep.safetensors", join(with_meta(header, deep), area))
    with pytest.raises(InvalidInputError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
        TemplateBank.load(path)
    result = CliRunner().invoke(cli, ["templates", "info", str(path)])
    assert result.exit_code == EXIT_INVALID_INPUT and "RecursionError" not in result.output


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda m: m.update(geometry=[]), "bank geometry must have exactly the fields"),
        (lambda m: m["geometry"].update(templates=[1, 2]), "templates must map each kind"),
        (lambda m: m.update(provenance=["a"]), "provenance must be a JSON object"),
        (lambda m: m["provenance"].update(data=["x"]), "provenance.data must be an object"),
        (lambda m: m["provenance"].update(data=None), "provenance.data must be an object"),
        (lambda m: m["provenance"]["data"].update(class_names=None), "provenance.data must be an object"),
        (lambda m: m.update(aux_spec=[6, 128]), "aux_spec must have exactly the fields"),
        (lambda m: m.update(sha256=[]), "sha256 list does not match"),
    ],
)
def test_a_list_where_an_object_belongs_is_exit_3_in_info_and_init(good, tmp_path, edit, reason):
    header, area = split(good)
    meta = meta_of(header)
    edit(meta)
    path = write(tmp_path, "b.safetensors", join(with_meta(header, meta), area))
    for args in (
        ["templates", "info", str(path)],
        ["init", "--templates", str(path), "--depth", "1", "--embed-dim", "16", "--out", str(tmp_path / "m")],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == EXIT_INVALID_INPUT, result.output
        assert reason in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"w": 8}, "has shape"),  # the templates are 16 wide: w is pinned by the tensors
        ({"num_classes": 7}, "aux scalers: expected kinds"),  # then the aux model has no templated head
        ({"max_embed_dim": 16}, "exceeds the bank's max_embed_dim"),  # the aux model is 32 wide
        ({"max_depth": 1}, "exceeds the bank's max_depth"),  # the aux model is 2 deep
        ({"mlp_ratio": 1e300}, "mlp_ratio must be a number"),
        ({"mlp_ratio": float("nan")}, "NaN is not a JSON number"),
        ({"head_dim": 10**30}, "head_dim must be an integer in"),
        ({"max_depth": 1024, "max_embed_dim": 16 * 1024}, "more sizes than a bank serves"),
    ],
)
def test_a_geometry_that_disagrees_with_the_tensors_or_is_unbounded_is_exit_3(good, tmp_path, fields, reason):
    path = write(tmp_path, "b.safetensors", with_geometry(good, **fields))
    for load in (TemplateBank.load, inspect_bank):
        with pytest.raises(InvalidInputError, match=reason) as info:
            load(path)
        assert info.value.exit_code == EXIT_INVALID_INPUT and str(path) in info.value.message


def test_geometry_at_the_size_limit_is_accepted_and_one_more_width_is_not():
    fields = {**random_bank().geometry.to_dict(), "max_depth": 1024}  # w = head_dim = 8
    assert BankGeometry.from_dict({**fields, "max_embed_dim": 8 * (MAX_SIZES // 1024)}).max_depth == 1024
    with pytest.raises(InvalidInputError, match="more sizes"):
        BankGeometry.from_dict({**fields, "max_embed_dim": 8 * (MAX_SIZES // 1024 + 1)})


def test_templates_info_escapes_control_characters_from_the_bank(tmp_path):
    bank = random_bank()
    bank.provenance = {"note": "red\x1b[31m\x07 bell\u202eevil", "nested": {"k\x1b]0;title\x07": ["a\nb"]}}
    path = bank.save(tmp_path / "b.safetensors")
    result = CliRunner().invoke(cli, ["templates", "info", str(path)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "red\\x1b[31m\\x07 bell\\u202eevil" in result.output
    assert "k\\x1b]0;title\\x07:" in result.output and "a\\x0ab" in result.output
    as_json = CliRunner().invoke(cli, ["templates", "info", str(path), "--json"])
    assert "\x1b" not in as_json.output
    assert json.loads(as_json.output)["provenance"]["note"] == bank.provenance["note"]  # escaped, not lost


def test_templates_info_prints_provenance_as_lines_not_python_dicts(tmp_path):
    bank = random_bank()
    bank.provenance = {"ancestry": {"checkpoint": "a.safetensors", "spec": {"depth": 6}}, "seeds": [0, 1]}
    result = CliRunner().invoke(cli, ["templates", "info", str(bank.save(tmp_path / "b.safetensors"))])
    text = result.output.split("provenance:\n", 1)[1]
    assert "{" not in text and "[" not in text
    assert "  ancestry:\n    checkpoint: a.safetensors\n    spec:\n      depth: 6\n  seeds: 0, 1\n" == text


def test_escape_control_keeps_printable_text():
    assert escape_control("käse — 3×4 ✓") == "käse — 3×4 ✓"
    assert escape_control("\x1b\x9b\u200b\u2028") == "\\x1b\\x9b\\u200b\\u2028"


def test_shipped_bank_tensors_are_unchanged_and_its_provenance_has_no_absolute_path():
    bank = inspect_bank(default_bank_path())
    lines = "".join(
        f"{n} {hashlib.sha256(raw).hexdigest()}\n" for n, raw in sorted(bank.read_tensors().items())
    )
    assert hashlib.sha256(lines.encode()).hexdigest() == SHIPPED_TENSORS_DIGEST

    def strings(value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    tokens = [t.partition("=")[2] or t for s in strings(bank.provenance) for t in s.split()]
    assert tokens and not [t for t in tokens if os.path.isabs(t)]
    assert bank.provenance["command"].startswith("wave-deploy templates build ")


def test_portable_paths_are_relative_to_the_working_directory_or_a_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "sub" / "t.safetensors") == "sub/t.safetensors"
    assert portable_path("/elsewhere/deep/t.safetensors") == "t.safetensors"
    assert portable_path("rel/t.safetensors") == "rel/t.safetensors"
    argv = [
        "/opt/venv/bin/wave-deploy",
        "templates",
        "build",
        "--out",
        str(tmp_path / "b.safetensors"),
        "--data=/d/x",
    ]
    assert portable_command(argv) == "wave-deploy templates build --out b.safetensors --data=x"
    assert portable_provenance({"data": {"source": "/srv/data/mnist", "n": 3}, "l": ["/a/b c/d"]}) == {
        "data": {"source": "mnist", "n": 3},
        "l": ["b c/d"],
    }


def test_stage_1_records_the_teacher_checkpoint_portably_with_its_sha256(tmp_path, monkeypatch):
    from wave_deploy.fileio import sha256_file
    from wave_deploy.spec import ViTSpec
    from wave_deploy.training.baselines import random_init
    from wave_deploy.training.folding import save_folded
    from wave_deploy.wave.stage1.learngene import load_teacher

    spec = ViTSpec(depth=1, embed_dim=16, num_heads=2, patch_size=4, img_size=8, in_chans=1, num_classes=3)
    path = tmp_path / "runs" / "teacher.safetensors"
    path.parent.mkdir()
    save_folded(path, random_init(spec, seed=1).state_dict(), spec, {"val_accuracy": None})
    monkeypatch.chdir(tmp_path)
    _, info = load_teacher(checkpoint=str(path), num_classes=3)  # an absolute path on the command line
    assert info["checkpoint"] == "runs/teacher.safetensors"
    assert info["checkpoint_sha256"] == sha256_file(path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the file is not under the working directory: its name only
    assert load_teacher(checkpoint=str(path), num_classes=3)[1]["checkpoint"] == "teacher.safetensors"


def _torch_free(args: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from wave_deploy.cli.main import cli\n"
        "try:\n"
        f"    cli.main({args!r}, standalone_mode=False)\n"
        "finally:\n"
        "    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--profile", "jetson", "--json"],
        ["plan", "--profile", "jetson", "--objective", "flops", "--json"],
        ["templates", "info", "SHIPPED", "--json"],
        ["templates", "info", "SHIPPED"],
    ],
)
def test_plan_and_templates_info_answer_without_importing_torch(args):
    args = [str(default_bank_path()) if a == "SHIPPED" else a for a in args]
    result = _torch_free(args)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "NO-TORCH"
    assert result.stdout.strip()


def test_plan_with_a_nan_bank_exits_3(good, tmp_path):
    path = write(
        tmp_path, "nan.safetensors", with_values(good, "templates/norm.bias", lambda v: v.fill(np.inf))
    )
    result = CliRunner().invoke(cli, ["plan", "--profile", "jetson", "--templates", str(path)])
    assert result.exit_code == EXIT_INVALID_INPUT and "templates/norm.bias" in result.output


def test_frontier_plot_writes_a_png_without_pyplot(tmp_path):
    code = (
        "import sys\n"
        "from wave_deploy.planning.plot import plot_frontier\n"
        "from wave_deploy.profiles import load_profile\n"
        "from wave_deploy.planning.selection import select\n"
        "p = load_profile('jetson')\n"
        f"plot_frontier(select(p), p, {str(tmp_path / 'f.png')!r})\n"
        "print('matplotlib.pyplot' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "False"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loaded_tensors_equal_the_saved_ones_bit_for_bit(tmp_path):
    bank = random_bank()
    bank.templates["norm.bias"] = bank.templates["norm.bias"].to(torch.float64)
    loaded = TemplateBank.load(bank.save(tmp_path / "b.safetensors"))
    for kind, t in bank.templates.items():
        assert loaded.templates[kind].dtype == t.dtype and torch.equal(loaded.templates[kind], t)


def test_bank_metadata_is_strict_json_both_ways(good, tmp_path):
    bank = random_bank()
    bank.provenance = {"loss": float("nan")}
    with pytest.raises(InvalidInputError, match="not JSON-serializable"):
        bank.save(tmp_path / "nan_provenance.safetensors")
    header, area = split(good)
    text = json.dumps(meta_of(header))[:-1] + ', "x": Infinity}'  # Python's json would accept it
    path = write(tmp_path, "b.safetensors", join(with_meta(header, text), area))
    with pytest.raises(InvalidInputError, match="Infinity is not a JSON number"):
        inspect_bank(path)


def test_a_file_larger_than_any_bank_is_refused_before_reading(good, tmp_path):
    from wave_deploy.wave.bank_file import MAX_FILE_BYTES

    path = write(tmp_path, "big.safetensors", good)
    with open(path, "r+b") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk space used
    with pytest.raises(InvalidInputError, match="more than a template bank may hold"):
        TemplateBank.load(path)


@pytest.mark.parametrize("name", ["a" * 5000 + ".safetensors", "dir/"])
def test_templates_info_on_a_path_that_cannot_be_a_bank_exits_3(tmp_path, name):
    result = CliRunner().invoke(cli, ["templates", "info", str(tmp_path / name)])
    assert result.exit_code == EXIT_INVALID_INPUT and result.stderr.startswith(
        "error: template bank not found"
    )
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda text: text[:-1] + ', "schema_version": 1}', "duplicated key 'schema_version'"),
        (lambda text: text.replace('"geometry": {', '"geometry": {"w": 16, ', 1), "duplicated key 'w'"),
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 1.0', 1), "schema_version 1.0"),
        (
            lambda text: text.replace('"schema_version": 1', '"schema_version": true', 1),
            "schema_version True",
        ),
        (lambda text: text[:-1] + ', "x": NaN}', "NaN is not a JSON number"),
    ],
    ids=["duplicate-equal-key", "duplicate-nested-key", "schema-1.0", "schema-true", "nan-token"],
)
def test_bank_metadata_is_strict_json_with_an_integer_schema_version(good, tmp_path, edit, reason):
    """A duplicated key is refused even when both copies agree (json.loads would keep the last one silently)."""
    header, area = split(good)
    text = json.dumps(meta_of(header))
    assert '"schema_version": 1,' in text and '"geometry": {"' in text  # what the edits rely on
    path = write(tmp_path, "b.safetensors", join(with_meta(header, edit(text)), area))
    result = CliRunner().invoke(cli, ["templates", "info", str(path)])
    assert result.exit_code == EXIT_INVALID_INPUT and result.stdout == ""
    line = _one_error_line(result)
    assert reason in line and str(path) in line


@pytest.mark.parametrize("value", [np.finfo(np.float32).max, -3.4e38, 1e4, -MAX_ABS_VALUE * 1.001])
def test_bank_values_beyond_the_distillation_limit_are_exit_3_in_info_plan_and_init(good, tmp_path, value):
    """Finite values up to 3.4e38 with a recomputed sha256: refused before any weight is made (issue 19)."""

    def poke(v):
        v[5] = value

    path = write(tmp_path, "big.safetensors", with_values(good, "templates/mlp.fc2.weight", poke))
    out = tmp_path / "model"
    init = ["init", "--templates", str(path), "--depth", "1", "--embed-dim", "16", "--scaler-steps", "0"]
    for argv in (
        ["templates", "info", str(path)],
        ["plan", "--profile", "jetson", "--templates", str(path)],
        [*init, "--dense-steps", "0", "--out", str(out)],
    ):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == EXIT_INVALID_INPUT, (argv, result.output)
        line = _one_error_line(result)
        assert "templates/mlp.fc2.weight holds 1 value(s)" in line and f"+-{MAX_ABS_VALUE:g}" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "dtype, above",
    [
        (torch.float16, 1000.5),  # the next float16 after 1000
        (torch.bfloat16, 1004.0),  # the next bfloat16 after 1000
        (torch.float32, float(np.nextafter(np.float32(1000), np.float32(2000)))),
        (torch.float64, float(np.nextafter(1000.0, 2000.0))),
    ],
)
def test_the_value_limit_is_exact_in_every_bank_dtype(tmp_path, dtype, above):
    """MAX_ABS_VALUE itself loads in F16, BF16, F32 and F64; the next representable value above it does not."""
    assert MAX_ABS_VALUE == 1000.0
    for value, ok in ((MAX_ABS_VALUE, True), (-MAX_ABS_VALUE, True), (above, False), (-above, False)):
        bank = random_bank()
        t = bank.templates["norm.bias"].to(dtype)
        t[0, 0] = value
        assert float(t[0, 0]) == value  # exactly representable in this dtype
        bank.templates["norm.bias"] = t
        path = bank.save(tmp_path / f"{value}.safetensors")
        if ok:
            assert TemplateBank.load(path).templates["norm.bias"][0, 0] == value
        else:
            with pytest.raises(InvalidInputError, match=r"templates/norm.bias holds 1 value\(s\) .* beyond"):
                inspect_bank(path)


def test_the_shipped_bank_is_well_inside_the_value_limit():
    """The limit leaves a wide margin over what a real distillation produced (largest: 4.19, docs/decisions.md)."""
    bank = TemplateBank.load(default_bank_path())
    largest = max(t.abs().max().item() for t in [*bank.templates.values(), *bank.aux_scalers.values()])
    assert 1 < largest < MAX_ABS_VALUE / 100
