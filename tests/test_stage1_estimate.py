"""Know before you spend (issue 18, point 2): the estimate times real steps without changing the bank, a run over
--max-hours stops before training naming what would shorten it, resume still works, and --json keeps the human
lines on stderr."""

import functools
import json
from pathlib import Path

import pytest
import torch
from _stage1_data import stripe_folder
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.spec import ViTSpec, flops
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import save_folded
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.stage1.estimate import evaluations, representative_size

TINY = ["--aux-depth", "2", "--aux-embed-dim", "16", "--template-size", "8", "--head-dim", "8"]
TINY += ["--templates-per-kind", "2", "--vector-templates", "2", "--batch-size", "8", "--seed", "3"]
TINY += ["--allow-weak-teacher"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(an 8 px grey ImageFolder of 3 classes, a folded 8 px teacher checkpoint)."""
    root = stripe_folder(tmp_path_factory.mktemp("imgs"))
    spec = ViTSpec(depth=1, embed_dim=16, num_heads=2, patch_size=4, img_size=8, in_chans=1, num_classes=3)
    ckpt = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_folded(ckpt, random_init(spec, seed=1).state_dict(), spec, {})
    return root, ckpt


def _args(tiny, out: Path, *extra: str) -> list[str]:
    data, ckpt = tiny
    return [
        "templates",
        "build",
        "--teacher-checkpoint",
        str(ckpt),
        "--data",
        str(data),
        *TINY,
        "--out",
        str(out),
        *extra,
    ]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    bank = TemplateBank.load(path)
    return {
        **{f"t/{k}": v for k, v in bank.templates.items()},
        **{f"s/{k}": v for k, v in bank.aux_scalers.items()},
    }


def test_the_estimate_does_not_change_the_bank_and_resume_still_works(tiny, tmp_path):
    plain, timed = tmp_path / "plain.safetensors", tmp_path / "timed.safetensors"
    runner = CliRunner()
    first = runner.invoke(cli, _args(tiny, plain, "--steps", "6", "--estimate-steps", "0", "--json"))
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["estimate"] is None
    second = runner.invoke(cli, _args(tiny, timed, "--steps", "6", "--estimate-steps", "3", "--json"))
    assert second.exit_code == 0, second.output
    est = json.loads(second.stdout)["estimate"]
    assert est["steps"] == 6 and est["timed_steps"] == 3 and est["seconds"] > 0
    a, b = _tensors(plain), _tensors(timed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: the timed steps ran on a throw-away copy
    start = TemplateBank.init_random(TemplateBank.load(plain).geometry, seed=3).templates
    assert any(not torch.equal(a[f"t/{k}"], v) for k, v in start.items())  # and training did move them
    assert TemplateBank.load(plain).provenance["estimate"] is None
    assert TemplateBank.load(timed).provenance["estimate"]["timed_steps"] == 3
    # --resume of the finished run: nothing left to do (the estimate says 0 steps), the same bank again
    again = runner.invoke(cli, _args(tiny, timed, "--steps", "6", "--resume", "--json"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["estimate"]["steps"] == 0
    c = _tensors(timed)
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_a_run_over_max_hours_stops_before_training_naming_what_shortens_it(tiny, tmp_path):
    out = tmp_path / "bank.safetensors"
    result = CliRunner().invoke(cli, _args(tiny, out, "--steps", "50", "--max-hours", "0.000001"))
    assert result.exit_code == 3, result.output
    # the geometry and teacher lines (what the estimate is about), then one error line; no estimate line
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["bank geometry", "teacher", "error"], result.stderr
    error = lines[-1]
    assert error.startswith("error: stage 1 would take about ") and "Traceback" not in result.output
    for named in ("50 steps", "over --max-hours 1e-06", "--patch-size (now 4: 4 tokens per image)"):
        assert named in error
    for named in (
        "--aux-depth/--aux-embed-dim (now 2/16)",
        "--steps/--epochs",
        "--device cuda",
        "raise --max-hours",
    ):
        assert named in error
    assert not out.exists() and not (tmp_path / "bank.ckpt").exists()  # nothing trained, nothing written


def test_max_hours_error_in_json_carries_the_estimate(tiny, tmp_path):
    result = CliRunner().invoke(
        cli, _args(tiny, tmp_path / "b.safetensors", "--steps", "50", "--max-hours", "0.000001", "--json")
    )
    assert result.exit_code == 3
    error = json.loads(result.stdout)
    assert error["exit_code"] == 3 and error["estimate"]["steps"] == 50


def test_json_keeps_the_human_lines_and_progress_on_stderr(tiny, tmp_path, monkeypatch):
    from wave_deploy.cli import progress

    every_step = functools.partialmethod(progress.TrainingProgress.__init__, plain_every_s=0.0)
    monkeypatch.setattr(progress.TrainingProgress, "__init__", every_step)  # a line per callback, not per 5 s
    result = CliRunner().invoke(cli, _args(tiny, tmp_path / "b.safetensors", "--steps", "6", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout is the JSON object alone
    assert summary["estimate"]["memory"]
    err = result.stderr
    assert "bank geometry: 8 px (teacher)" in err and "teacher: " in err and "stage 1 estimate: " in err
    assert "stage 1: templates: step 6/6" in err  # the non-TTY progress lines (issue 21)
    quiet = CliRunner().invoke(
        cli, ["-q", *_args(tiny, tmp_path / "c.safetensors", "--steps", "2", "--json")]
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_peak_memory_is_the_process_peak_rss_on_linux(tiny, tmp_path):
    result = CliRunner().invoke(cli, _args(tiny, tmp_path / "b.safetensors", "--steps", "1", "--json"))
    est = json.loads(result.stdout)["estimate"]
    assert est["device"] == "cpu" and "VmHWM" in est["memory"]
    assert est["peak_memory_mib"] > 50  # at least torch itself is resident


@pytest.mark.parametrize(
    "total, start, per_epoch, expected",
    [(10, 0, 4, 3), (8, 0, 4, 2), (10, 5, 4, 2), (10, 10, 4, 0), (3, 0, 4, 1)],
)
def test_evaluations_are_counted_as_the_loop_does(total, start, per_epoch, expected):
    # the loop evaluates at every multiple of per_epoch and at the last step
    steps = range(start + 1, total + 1)
    assert evaluations(total, start, per_epoch) == sum(1 for s in steps if s % per_epoch == 0 or s == total)
    assert evaluations(total, start, per_epoch) == expected


def test_the_timed_sub_size_is_the_one_nearest_the_mean_cost():
    sizes = [ViTSpec(depth=d, embed_dim=64, num_heads=1, patch_size=4, img_size=8) for d in (1, 2, 3, 10)]
    mean = sum(flops(s) for s in sizes) / len(sizes)
    picked = representative_size(sizes)
    assert picked is not None and picked.depth == 3
    assert abs(flops(picked) - mean) == min(abs(flops(s) - mean) for s in sizes)
    assert representative_size([]) is None


def test_the_peak_memory_is_read_over_a_step_at_the_largest_sub_size(tiny, tmp_path, monkeypatch):
    """Timed steps run the mean-cost sub-size, but the run's peak memory comes from its largest one: the
    estimate trains that one untimed step first and reads the peak over it (estimate.py module doc)."""
    from wave_deploy.wave import slicing
    from wave_deploy.wave.stage1 import estimate as stage1_estimate
    from wave_deploy.wave.stage1 import learngene

    ran: list[tuple[ViTSpec, bool]] = []  # (sub-size, inside the estimate's peak-memory window)
    window = [False]
    real_call, real_reset, real_read = (
        slicing.Subnet.__call__,
        stage1_estimate._reset_peaks,
        stage1_estimate._read_peak,
    )

    def spy_call(self, aux, x):
        if aux.training:
            ran.append((self.spec, window[0]))
        return real_call(self, aux, x)

    def reset(cuda):
        window[0] = True
        return real_reset(cuda)

    def read(device):
        window[0] = False
        return real_read(device)

    monkeypatch.setattr(slicing.Subnet, "__call__", spy_call)
    monkeypatch.setattr(stage1_estimate, "_reset_peaks", reset)
    monkeypatch.setattr(stage1_estimate, "_read_peak", read)
    sizes_seen = []
    real_elastic = learngene.elastic_sizes
    monkeypatch.setattr(
        learngene, "elastic_sizes", lambda *a: sizes_seen.append(real_elastic(*a)) or sizes_seen[-1]
    )
    result = CliRunner().invoke(
        cli, _args(tiny, tmp_path / "b.safetensors", "--steps", "4", "--estimate-steps", "2", "--json")
    )
    assert result.exit_code == 0, result.output
    sizes = sizes_seen[0]
    largest, rep = max(sizes, key=flops), representative_size(sizes)
    assert largest != rep  # the case this guards: the timed sub-size is not the largest
    in_window = [spec for spec, inside in ran if inside]
    assert in_window == [largest, rep, rep, rep]  # largest (untimed), warm-up, 2 timed steps
    est = json.loads(result.stdout)["estimate"]
    assert f"L{largest.depth} D{largest.embed_dim}" in est["memory"] and est["timed_steps"] == 2
    assert est["steps"] == 4 == json.loads(result.stdout)["steps"]  # the run's real step count


def test_the_estimate_counts_the_steps_the_run_takes_by_epochs(tiny, tmp_path):
    """Without --steps the run's length comes from --epochs and the training split: the estimate's step count is
    the number of optimizer steps the run then really takes (its accounting, not its timing)."""
    result = CliRunner().invoke(cli, _args(tiny, tmp_path / "b.safetensors", "--epochs", "2", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["estimate"]["steps"] == summary["steps"] > 2
