"""The input files of the bad-input corpus (tests/test_bad_inputs.py): data trees, profile variants, folded
checkpoints and a read-only folder, made once per test module by ``input_files`` (the test module's ``env`` fixture)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import stat
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from _banks import mnist_bank_file
from PIL import Image

from wave_deploy.profiles import builtin_profiles_dir

PROFILE = "jetson-orin-nano-8gb"


def _png(path: Path, size=(28, 28), mode="L", seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(path)


# Just under Pillow's decompression-bomb error (2 x Image.MAX_IMAGE_PIXELS = 178,956,970 px): 178,944,129 px.
HUGE_SIDE = 13377


def huge_png(path: Path, side: int = HUGE_SIDE) -> Path:
    """A valid 1-bit grayscale PNG of side x side px (all black): 22 KB on disk, 179 M px once decoded."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _tree(root: Path, classes=("a", "b"), n=3, size=(28, 28), mode="L") -> Path:
    for c in classes:
        for i in range(n):
            _png(root / c / f"{i}.png", size, mode, seed=i)
    return root


def _make_data_trees(base: Path) -> dict[str, Path]:
    trees = {}
    (base / "empty").mkdir(parents=True)
    trees["empty"] = base / "empty"
    trees["no_images"] = base / "no_images"
    (trees["no_images"] / "a").mkdir(parents=True)
    (trees["no_images"] / "b").mkdir(parents=True)
    (trees["no_images"] / "a" / "notes.txt").write_text("not an image")
    trees["one_class"] = _tree(base / "one_class", classes=("only",))
    trees["mixed_sizes"] = _tree(base / "mixed_sizes")
    _png(trees["mixed_sizes"] / "b" / "big.png", size=(32, 32))
    trees["not_square"] = _tree(base / "not_square", size=(28, 20))
    trees["rgb"] = _tree(base / "rgb", mode="RGB")
    trees["wrong_size"] = _tree(base / "wrong_size", size=(8, 8))
    for name, payload in {
        "corrupt": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20,
        "text_as_png": b"hello, I am not a picture\n",
        "zero_bytes": b"",
    }.items():
        trees[name] = _tree(base / name)
        (trees[name] / "a" / "bad.png").write_bytes(payload)
    trees["huge_header"] = _tree(base / "huge_header")
    huge_png(trees["huge_header"] / "b" / "huge.png")
    trees["truncated"] = _tree(base / "truncated")
    good = (trees["truncated"] / "a" / "0.png").read_bytes()
    (trees["truncated"] / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    trees["train_without_val"] = _tree(base / "train_without_val" / "train")
    trees["train_without_val"] = base / "train_without_val"
    trees["split_classes_differ"] = base / "split_classes_differ"
    _tree(trees["split_classes_differ"] / "train", classes=("a", "b"))
    _tree(trees["split_classes_differ"] / "val", classes=("a", "c"))
    trees["one_image_per_class"] = _tree(base / "one_image_per_class", n=1)
    trees["a_file"] = base / "a_file.png"
    _png(trees["a_file"])
    trees["missing"] = base / "does-not-exist"
    return trees


def _profile_variants(base: Path) -> dict[str, tuple[Path, str]]:
    """name -> (profile file, text the error must contain)."""
    source = builtin_profiles_dir() / f"{PROFILE}.yaml"
    good = yaml.safe_load(source.read_text())
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, text: str | bytes, expect: str) -> None:
        path = base / f"{name}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out[name] = (path, expect)

    def edited(name: str, expect: str, edit) -> None:
        data = json.loads(json.dumps(good))
        edit(data)
        put(name, yaml.safe_dump(data), expect)

    put("syntax_error", "name: [unclosed\nbudgets: {", "YAML syntax error")
    put("tab_indent", "name: x\nbudgets:\n\tlatency_ms: 1\n", "YAML syntax error")
    put("duplicate_key", source.read_text() + "\nname: again\n", "duplicate key 'name'")
    put("empty", "", "file is empty")
    put("only_comment", "# nothing here\n", "file is empty")
    put("top_level_list", "- a\n- b\n", "expected a mapping")
    put("top_level_scalar", "42\n", "expected a mapping")
    put("not_utf8", b"name: \xff\xfe\xfa\n", "cannot read it")
    put("python_tag", "name: !!python/object/apply:os.system ['true']\n", "YAML error")
    put("nested_brackets", "name: " + "[" * 1000 + "]" * 1000, "nested too deeply")
    put("nested_mappings", "name:\n" + "".join("  " * i + "k:\n" for i in range(1, 200)), "levels deep")
    put("nested_in_field", yaml.safe_dump({**good, "aliases": [[[[[[[[[["x"]]]]]]]]]]}), "levels deep")
    put("huge_file", "# " + "x" * (1 << 20) + "\n" + source.read_text(), "at most")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for prev, name in zip("abc", "bcd", strict=True):
        laughs += f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    put("alias_bomb", laughs, "unknown key")
    edited("unknown_top_key", "field 'colour'", lambda d: d.update(colour="red"))
    edited("unknown_nested_key", "field 'budgets.latency_mss'", lambda d: d["budgets"].update(latency_mss=1))
    edited("missing_section", "field 'budgets'", lambda d: d.pop("budgets"))
    edited("missing_field", "field 'hardware.cpu_cores'", lambda d: d["hardware"].pop("cpu_cores"))
    edited("wrong_type_str", "field 'budgets.latency_ms'", lambda d: d["budgets"].update(latency_ms="fast"))
    edited("wrong_type_float", "field 'hardware.cpu_cores'", lambda d: d["hardware"].update(cpu_cores=2.5))
    edited("wrong_type_list", "field 'runtime'", lambda d: d.update(runtime=[1, 2]))
    edited("negative_budget", "field 'budgets.latency_ms'", lambda d: d["budgets"].update(latency_ms=-1))
    edited("zero_memory", "field 'budgets.memory_mib'", lambda d: d["budgets"].update(memory_mib=0))
    edited("bad_choice", "field 'runtime.precision'", lambda d: d["runtime"].update(precision="int4"))
    edited("bad_percentile", "latency_percentile", lambda d: d["budgets"].update(latency_percentile="p42"))
    edited("batch_order", "batch", lambda d: d["runtime"].update(batch_min=8, batch_max=2))
    put("huge_float", source.read_text().replace("latency_ms: ", "latency_ms: 1.0e+999 #"), "latency_ms")
    put("nan_float", source.read_text().replace("latency_ms: ", "latency_ms: .nan #"), "latency_ms")
    put("huge_int", source.read_text().replace("cpu_cores: ", f"cpu_cores: {10**40} #"), "cpu_cores")
    edited("bool_number", "not a boolean", lambda d: d["budgets"].update(latency_ms=True))
    edited(
        "negative_drop",
        "max_accuracy_drop_points",
        lambda d: d["runtime"].update(max_accuracy_drop_points=-1),
    )
    put(
        "huge_digits", source.read_text().replace("cpu_cores: ", f"cpu_cores: {'7' * 5000} #"), "5,000 digits"
    )
    (base / "empty.calibration.json").write_text("")
    for name, cal in (
        ("calibration_missing", "missing.calibration.json"),
        ("calibration_empty", "empty.calibration.json"),
    ):
        edited(
            name, cal, lambda d, cal=cal: d["latency_model"].update(kind="calibrated", calibration_file=cal)
        )
    directory = base / "a_directory.yaml"
    directory.mkdir()
    out["is_directory"] = (directory, "is a directory")
    out["missing_file"] = (base / "missing.yaml", "does not exist")
    return out


def _folded_checkpoints(base: Path) -> tuple[Path, dict[str, tuple[Path, str]]]:
    """A valid folded checkpoint and damaged variants: name -> (path, text the error must contain)."""
    import torch
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.spec import ViTSpec
    from wave_deploy.training.folding import save_folded

    spec = ViTSpec(depth=1, embed_dim=16, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10)
    torch.manual_seed(0)
    state = VisionTransformer(**spec.timm_kwargs()).state_dict()
    good = save_folded(base / "good.safetensors", state, spec)
    raw = good.read_bytes()
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, expect: str, suffix=".safetensors") -> None:
        path = base / f"{name}{suffix}"
        path.write_bytes(data)
        out[name] = (path, expect)

    put("zero_bytes", b"", "not a readable safetensors file")
    put("random_bytes", np.random.default_rng(0).bytes(4096), "not a readable safetensors file")
    put("truncated", raw[: len(raw) // 2], "not a readable safetensors file")
    put("header_only", raw[:64], "not a readable safetensors file")
    put("huge_header_length", struct.pack("<Q", 2**62) + raw[8:], "not a readable safetensors file")
    put("pickle", pickle.dumps({"w": [1.0, 2.0]}), "not a readable safetensors file")
    torch.save({"w": torch.zeros(2)}, base / "torch_save.safetensors")
    out["torch_save"] = (base / "torch_save.safetensors", "not a readable safetensors file")
    save_file({"w": torch.zeros(2)}, str(base / "no_metadata.safetensors"))
    out["no_metadata"] = (base / "no_metadata.safetensors", "not a wave-deploy folded checkpoint")
    save_file(state, str(base / "plain_timm.safetensors"), metadata={"format": "something-else"})
    out["foreign_format"] = (base / "plain_timm.safetensors", "not a wave-deploy folded checkpoint")
    meta = {"format": "wave-deploy.folded-vit", "schema_version": "1"}
    save_file(state, str(base / "spec_not_json.safetensors"), metadata={**meta, "spec": "{nope"})
    out["spec_not_json"] = (base / "spec_not_json.safetensors", "unreadable spec metadata")
    bad_spec = json.dumps({**spec.to_dict(), "colour": "red"})
    save_file(state, str(base / "spec_unknown_field.safetensors"), metadata={**meta, "spec": bad_spec})
    out["spec_unknown_field"] = (base / "spec_unknown_field.safetensors", "colour")
    deeper = json.dumps({**spec.to_dict(), "depth": 2})
    save_file(state, str(base / "wrong_keys.safetensors"), metadata={**meta, "spec": deeper})
    out["wrong_keys"] = (base / "wrong_keys.safetensors", "does not fit")
    missing = {k: v for k, v in state.items() if k != "head.weight"}
    save_file(
        missing, str(base / "missing_key.safetensors"), metadata={**meta, "spec": json.dumps(spec.to_dict())}
    )
    out["missing_key"] = (base / "missing_key.safetensors", "head.weight")
    for name, key, value in (
        ("nan_weight", "blocks.0.attn.qkv.weight", float("nan")),
        ("inf_weight", "head.bias", float("inf")),
        ("neg_inf_weight", "pos_embed", float("-inf")),
    ):
        poisoned = {k: v.clone() for k, v in state.items()}
        poisoned[key].view(-1)[3] = value
        save_folded(base / f"{name}.safetensors", poisoned, spec)
        out[name] = (base / f"{name}.safetensors", f"tensor {key} holds 1 NaN/Inf value(s)")
    (base / "a_dir.safetensors").mkdir()
    out["directory"] = (base / "a_dir.safetensors", "is a directory")
    out["missing"] = (base / "missing.safetensors", "does not exist")
    return good, out


def _onnx_models(base: Path) -> dict[str, tuple[Path, str]]:
    """Valid ONNX models that bench cannot feed: name -> (path, text the error must contain)."""
    import onnx
    from onnx import TensorProto, helper

    def model(name: str, inputs: list[tuple[str, int, list]], expect: str) -> None:
        values = [helper.make_tensor_value_info(n, t, shape) for n, t, shape in inputs]
        first = inputs[0]
        if len(inputs) == 1:
            node = helper.make_node("Identity", [first[0]], ["y"])
        else:
            node = helper.make_node("Sum", [n for n, _, _ in inputs], ["y"])
        out = helper.make_tensor_value_info("y", first[1], first[2])
        graph = helper.make_graph([node], name, values, [out])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(m)
        onnx.save(m, str(base / f"{name}.onnx"))
        models[name] = (base / f"{name}.onnx", expect)

    models: dict[str, tuple[Path, str]] = {}
    image = ["batch", 1, 28, 28]
    model("int_input", [("x", TensorProto.INT64, image)], "takes a tensor(int64) input")
    model("uint8_input", [("x", TensorProto.UINT8, image)], "takes a tensor(uint8) input")
    model("string_input", [("x", TensorProto.STRING, image)], "takes a tensor(string) input")
    model("two_inputs", [("a", TensorProto.FLOAT, image), ("b", TensorProto.FLOAT, image)], "takes 2 inputs")
    model("flat_input", [("x", TensorProto.FLOAT, ["batch", 784])], "takes a 2-D input")
    model("scalar_input", [("x", TensorProto.FLOAT, [])], "takes a 0-D input")
    model("free_height", [("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])], "C, H or W is not a fixed size")
    model("fixed_batch_4", [("x", TensorProto.FLOAT, [4, 1, 28, 28])], "fixed batch of 4; batch 1")
    return models


@dataclass
class Env:
    root: Path
    bank: Path
    profiles: dict[str, tuple[Path, str]]
    data: dict[str, Path]
    checkpoint: Path
    checkpoints: dict[str, tuple[Path, str]]
    readonly: Path | None
    a_file: Path
    calibration_garbage: Path
    onnx_models: dict[str, tuple[Path, str]]
    fifo: Path  # a named pipe: an output path there must be refused, never replaced by a regular file
    devlink: Path  # a symbolic link to /dev/null (links are followed: a character device)
    chardev: Path | None  # a character device node made in the test tree (root only, as CI runs)
    manifests: dict[str, tuple[Path, str]] = field(default_factory=dict)

    def special_nodes(self) -> dict[Path, int]:
        """Each special node -> the st_mode type bits it must still have after any command ran."""
        nodes = [self.fifo, self.devlink] + ([self.chardev] if self.chardev else [])
        return {node: stat.S_IFMT(os.stat(node).st_mode) for node in nodes}


def _char_device(path: Path) -> Path | None:
    """A character device with /dev/null's numbers at ``path`` (root only; None where mknod is refused)."""
    if os.geteuid() != 0:
        return None
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    except OSError:
        return None
    return path


@contextlib.contextmanager
def _readonly_dir(path: Path):
    """A directory nobody can write into, root included (chmod, plus the immutable flag when root)."""
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        immutable = (
            bool(chattr)
            and subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False).returncode == 0
        )
    try:
        probe = path / "probe"
        try:
            probe.touch()
            probe.unlink()
            yield None  # still writable (root without chattr): those cases skip
        except OSError:
            yield path
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(path)], capture_output=True, check=False)
        path.chmod(0o755)


@contextlib.contextmanager
def input_files(root: Path):
    """Every input file of the corpus under ``root``; yields their Env (the read-only folder is undone after)."""
    bank = mnist_bank_file(root / "bank")
    checkpoint, checkpoints = _folded_checkpoints(_mkdir(root / "ckpt"))
    garbage = root / "garbage.calibration.json"
    garbage.write_text("{not json")
    a_file = root / "a_file.txt"
    a_file.write_text("I am a file")
    os.mkfifo(root / "a.fifo")
    (root / "null.link").symlink_to("/dev/null")
    with _readonly_dir(root / "readonly") as readonly:
        yield Env(
            root=root,
            bank=bank,
            profiles=_profile_variants(_mkdir(root / "profiles")),
            data=_make_data_trees(root / "data"),
            checkpoint=checkpoint,
            checkpoints=checkpoints,
            readonly=readonly,
            a_file=a_file,
            calibration_garbage=garbage,
            onnx_models=_onnx_models(_mkdir(root / "onnx")),
            fifo=root / "a.fifo",
            devlink=root / "null.link",
            chardev=_char_device(root / "null.dev"),
        )


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
