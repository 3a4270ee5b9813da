"""Damaged caches and leftovers of killed runs: a build recovers from every corrupted cache entry (by itself, or
with --force), says which folder to delete when it cannot, and cleans the ``.part`` files a killed write left.
Also: a folded checkpoint's bytes depend only on its contents."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _banks import mnist_bank_file

from wave_deploy import data as datasets
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import remove_stale_parts
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.build import _train
from wave_deploy.pipeline.inits import Sources
from wave_deploy.pipeline.manifest import StageOutput, StageRunner
from wave_deploy.spec import ViTSpec
from wave_deploy.training.checkpoint import CHECKPOINT_FORMAT
from wave_deploy.training.folding import load_folded_file, save_folded
from wave_deploy.wave.bank import TemplateBank

SPEC = ViTSpec(depth=1, embed_dim=16, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10)


# ------------------------------------------------------------------------------------ reproducible bytes
def test_a_folded_checkpoint_has_the_same_bytes_every_time_it_is_saved(tmp_path):
    torch.manual_seed(0)
    from timm.models.vision_transformer import VisionTransformer

    state = VisionTransformer(**SPEC.timm_kwargs()).state_dict()
    extra = {"train_key": "k", "b": 1, "a": [1, 2]}
    blobs = {save_folded(tmp_path / f"m{i}.safetensors", state, SPEC, extra).read_bytes() for i in range(12)}
    assert len(blobs) == 1  # the safetensors writer alone gives several orders of its metadata map
    data = blobs.pop()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    header = json.loads(data[8 : 8 + n])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(header["__metadata__"])
    model, spec, loaded_extra = load_folded_file(
        tmp_path / "m0.safetensors"
    )  # still a valid file, strict load
    assert spec == SPEC and loaded_extra == extra
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


# ------------------------------------------------------------------------------------------ .part files
def test_stale_part_files_are_removed_and_nothing_else(tmp_path):
    keep = [tmp_path / "model.onnx", tmp_path / "notes.part", tmp_path / "sub" / "model.safetensors"]
    stale = [tmp_path / ".model.onnx.k2j4x9.part", tmp_path / "sub" / ".report.json.abc.part"]
    for path in keep + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(remove_stale_parts(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_a_write_killed_midway_leaves_a_part_file_that_the_next_run_removes(tmp_path):
    out = tmp_path / "dev"
    killed = textwrap.dedent(
        f"""
        import os
        from wave_deploy.fileio import atomic_path
        with atomic_path({str(out / "model.onnx")!r}) as tmp:
            tmp.write_bytes(b"half a model")
            os._exit(9)  # killed between the write and the rename
        """
    )
    proc = subprocess.run([sys.executable, "-c", killed], capture_output=True, check=False)
    assert proc.returncode == 9
    parts = list(out.glob(".model.onnx.*.part"))
    assert len(parts) == 1 and not (out / "model.onnx").exists()
    StageRunner(out, config={})  # the next run of this output directory
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------------- manifest
def test_a_garbage_manifest_stops_a_run_naming_it_and_force_recovers(tmp_path):
    (tmp_path / "manifest.json").write_text('{"schema_version": 1, "stages": "plan"}')
    with pytest.raises(InvalidInputError) as info:
        StageRunner(tmp_path, config={})
    assert f"delete {tmp_path / 'manifest.json'} or rerun with --force" in info.value.one_line()
    runner = StageRunner(tmp_path, config={}, force=True)

    def stage(out_dir: Path) -> StageOutput:
        (out_dir / "plan.json").write_text("{}")
        return StageOutput({"ok": True}, ["plan.json"])

    assert not runner.run("plan", "key", stage).reused
    assert StageRunner(tmp_path, config={}).run("plan", "key", stage).reused  # the rewritten manifest is good


# --------------------------------------------------------------------------- the shared training caches
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    bank = TemplateBank.load(mnist_bank_file(tmp_path_factory.mktemp("bank")))
    return bank, datasets.load(None, seed=0)


def _run_train(inputs, root: Path, *, force=False, key="k1"):
    bank, data = inputs
    out_dir = root / "dev"
    out_dir.mkdir(parents=True, exist_ok=True)
    options = BuildOptions(scaler_steps=2, dense_steps=1, batch_size=16, device="cpu", force=force)
    sources = Sources(bank.geometry, "bank", bank)
    return _train(out_dir, sources, data, SPEC.to_dict(), options, key, (None, None), "dev")


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    """The bytes of a model trained once, and the training record."""
    root = tmp_path_factory.mktemp("first")
    result = _run_train(inputs, root)
    return (root / "dev" / "model.safetensors").read_bytes(), result.result


def _foreign_models(shared: Path) -> dict:
    torch.manual_seed(1)
    from timm.models.vision_transformer import VisionTransformer

    other = VisionTransformer(**SPEC.timm_kwargs()).state_dict()
    return {
        "random-bytes": lambda: (shared / "model.safetensors").write_bytes(
            np.random.default_rng(0).bytes(999)
        ),
        "truncated": lambda: (shared / "model.safetensors").write_bytes(
            (shared / "model.safetensors").read_bytes()[:-100]
        ),
        "other-train-key": lambda: save_folded(
            shared / "model.safetensors", other, SPEC, {"train_key": "k0"}
        ),
        "train-json-a-list": lambda: (shared / "train.json").write_text("[1, 2]"),
        "train-json-garbage": lambda: (shared / "train.json").write_bytes(b"\xff\xfe{"),
        "no-train-json": lambda: (shared / "train.json").unlink(),
    }


@pytest.mark.parametrize(
    "damage",
    [
        "random-bytes",
        "truncated",
        "other-train-key",
        "train-json-a-list",
        "train-json-garbage",
        "no-train-json",
    ],
)
def test_a_damaged_shared_model_is_trained_again_without_being_asked(inputs, trained, tmp_path, damage):
    _run_train(inputs, tmp_path)
    shared = tmp_path / ".models" / "k1"
    _foreign_models(shared)[damage]()
    (tmp_path / ".models" / "k1" / ".model.safetensors.x1y2.part").write_bytes(b"left by a killed run")
    result = _run_train(inputs, tmp_path)  # e.g. another profile that picks the same size, or a --force rerun
    assert (tmp_path / "dev" / "model.safetensors").read_bytes() == trained[0]  # retrained, same bytes
    assert (shared / "model.safetensors").read_bytes() == trained[0]
    assert result.result["val_acc"] == trained[1]["val_acc"]
    assert not list(shared.glob("*.part"))


def _checkpoint_files() -> dict:
    valid_start = {"format": CHECKPOINT_FORMAT, "config": {}, "fingerprint": "x"}

    class Payload:  # a pickle that would run code if it were unpickled without weights_only
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    def truncated(path: Path) -> None:
        torch.save({**valid_start, "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])

    bad_rng = {
        **valid_start, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "step": 1, "history": [],
        "window": torch.zeros(2), "train_time_s": 0.0, "rng": {"torch_cpu": [torch.zeros(3, dtype=torch.uint8)]},
    }  # fmt: skip
    return {
        "truncated": truncated,
        "random-bytes": lambda p: p.write_bytes(np.random.default_rng(1).bytes(2048)),
        "missing-fields": lambda p: torch.save(valid_start, p),
        "a-list": lambda p: torch.save([1, 2, 3], p),
        "pickled-code": lambda p: p.write_bytes(pickle.dumps(Payload(), protocol=2)),
        "wrong-rng-state": lambda p: torch.save(bad_rng, p),
    }


@pytest.mark.parametrize(
    "content", ["truncated", "random-bytes", "missing-fields", "a-list", "pickled-code", "wrong-rng-state"]
)
def test_an_unusable_training_checkpoint_names_its_folder_and_force_recovers(
    inputs, trained, tmp_path, content
):
    cache = tmp_path / ".cache" / "train-k1"
    ckpt = cache / "scalers" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    _checkpoint_files()[content](ckpt)
    with pytest.raises(InvalidInputError) as info:
        _run_train(inputs, tmp_path)
    line = info.value.one_line()
    assert f"delete {cache}, or rerun with --force" in line and str(ckpt) in line
    assert info.value.exit_code == 3 and not (tmp_path / ".models" / "k1").exists()
    _run_train(inputs, tmp_path, force=True)
    assert (tmp_path / "dev" / "model.safetensors").read_bytes() == trained[0]
    assert not cache.exists()  # removed once the model is complete


def test_an_intact_shared_model_is_reused_not_retrained(inputs, trained, tmp_path):
    _run_train(inputs, tmp_path)
    record = tmp_path / ".models" / "k1" / "train.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "marker": "reused"}))
    (tmp_path / "dev" / "train.json").unlink()
    result = _run_train(inputs, tmp_path)  # another profile picking the same size
    assert result.result["marker"] == "reused"
    assert (tmp_path / "dev" / "model.safetensors").read_bytes() == trained[0]
