"""DDP under torchrun: 2 gloo processes on CPU end identical to each other and to one process.

Tolerance: parameters of the 2-process run equal the 1-process run with the same global batch within
atol 1e-5 (the two runs sum gradients in different orders, so bitwise equality is not expected); the two
ranks are bitwise identical to each other (same sha256).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wave_deploy.training import distributed as D
from wave_deploy.training.loop import CHECKPOINT_NAME

WORKER = Path(__file__).with_name("_ddp_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_gloo_processes_end_identical_and_match_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]  # bitwise identical weights on both ranks
    assert ranks[0]["history"] == ranks[1]["history"]  # same all-reduced train loss and val metrics
    assert [r["progress_calls"] for r in ranks] == [6, 0]  # only rank 0 reports progress

    single = load_worker().run(tmp_path / "single")  # this process: not distributed
    assert single["world_size"] == 1 and not D.is_distributed()
    ddp_weights = load_file(str(tmp_path / "ddp" / "final.safetensors"))
    one_weights = load_file(str(tmp_path / "single" / "final.safetensors"))
    assert ddp_weights.keys() == one_weights.keys()
    for name, w in one_weights.items():
        torch.testing.assert_close(ddp_weights[name], w, atol=1e-5, rtol=0, msg=name)
    for (step, loss, val_loss, val_acc), ref in zip(ranks[0]["history"], single["history"]):
        assert step == ref[0] and val_acc == ref[3]
        assert loss == pytest.approx(ref[1], abs=1e-5) and val_loss == pytest.approx(ref[2], abs=1e-5)

    ckpt = torch.load(tmp_path / "ddp" / "ckpt" / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["step"] == 6 and len(ckpt["rng"]["torch_cpu"]) == 2  # written once, with both ranks' RNG
    assert not torch.equal(ckpt["rng"]["torch_cpu"][0], ckpt["rng"]["torch_cpu"][1])


def test_helpers_report_a_single_process_when_not_launched_by_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert (D.is_distributed(), D.rank(), D.world_size(), D.is_main_process()) == (False, 0, 1, True)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (D.is_distributed(), D.rank(), D.world_size(), D.is_main_process()) == (True, 1, 2, False)


@pytest.mark.parametrize("fail", [False, True])
def test_the_cli_leaves_the_process_group_a_command_joined(tmp_path, fail):
    """A gloo group left alive at exit can abort the process (SIGABRT) after a successful run under torchrun."""
    import click
    import torch.distributed as dist
    from click.testing import CliRunner

    from wave_deploy.cli.main import cli
    from wave_deploy.errors import InvalidInputError

    @click.command("join-group")
    def join_group():
        store = dist.FileStore(str(tmp_path / "store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        assert dist.is_initialized()
        if fail:
            raise InvalidInputError("bad input after joining")

    cli.add_command(join_group)
    try:
        result = CliRunner().invoke(cli, ["join-group"])
    finally:
        cli.commands.pop("join-group")
    assert result.exit_code == (3 if fail else 0), result.output
    assert not dist.is_initialized()
