"""The plain training loop: learning, schedule, clipping, losses, data order, exact resume, input checks.

Learning and exact resume run on the ``device`` fixture with the loop's default autocast (none on the cpu;
bf16 on cuda under scripts/gpu_check.sh); the rest on the CPU.
"""

from __future__ import annotations

import copy
import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.errors import InvalidInputError, MissingDependencyError
from wave_deploy.training.config import epoch_permutation, global_batch_indices, lr_factor
from wave_deploy.training.loop import CHECKPOINT_NAME, TrainConfig, distillation_loss, train


def tiny_vit(seed: int = 0, num_classes: int = 2, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, num_classes=num_classes, embed_dim=16, depth=2, num_heads=2,
        mlp_ratio=2.0, **kw,
    )  # fmt: skip


def stripes(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by which half of an 8x8 image is brighter, under noise of the same size."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)  # (n,)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)  # (n, 1, 8, 8)
    x[y == 0, :, :, :4] += 1.0
    x[y == 1, :, :, 4:] += 1.0
    return x, y


def cpu_config(**kw) -> TrainConfig:
    base = {"batch_size": 16, "lr": 3e-3, "weight_decay": 0.05, "device": "cpu", "amp": "off", "log_every": 1}
    return TrainConfig(**{**base, **kw})


def test_training_learns_separable_patterns_well_above_chance(device):
    x, y = stripes(640)
    cfg = cpu_config(
        steps=80, batch_size=32, lr=1e-2, warmup_steps=5, eval_every=20, device=device.type, amp="auto"
    )
    result = train(tiny_vit(), cfg, x[:512], y[:512], x[512:], y[512:])
    assert result.device.startswith(device.type) and (result.amp == "off") == (device.type == "cpu")
    losses = [r.train_loss for r in result.history]
    assert [r.step for r in result.history] == [20, 40, 60, 80]
    assert losses[-1] < 0.7 * losses[0]
    assert result.history[0].val_acc < result.final_val_acc
    assert result.final_val_acc >= 0.9  # chance is 0.5
    assert result.final_val_acc == result.history[-1].val_acc and result.steps == 80


def test_lr_follows_linear_warmup_then_cosine_to_min_ratio():
    lrs: list[float] = []
    x, y = stripes(64)
    cfg = cpu_config(steps=20, lr=0.01, warmup_steps=4, min_lr_ratio=0.1)
    train(tiny_vit(), cfg, x, y, on_step=lambda info: lrs.append(info.lr))
    assert len(lrs) == 20
    # Step k (1-based) uses lr * k / 4 for k <= 4, then 0.01 * (0.1 + 0.9 * (1 + cos(pi * (k - 5) / 16)) / 2).
    expected = {1: 0.0025, 2: 0.005, 4: 0.01, 5: 0.01, 13: 0.0055}
    expected[20] = 0.01 * (0.1 + 0.45 * (1 + math.cos(math.pi * 15 / 16)))
    for k, value in expected.items():
        assert lrs[k - 1] == pytest.approx(value, rel=1e-12), k
    after_warmup = lrs[4:]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))
    assert min(lrs) >= 0.001 - 1e-15
    assert lr_factor(100, 4, 20, 0.1) == pytest.approx(0.1)  # past the budget the floor holds


def test_grad_clipping_bounds_the_norm_the_optimizer_steps_with():
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen: list[float] = []

    def record_norm(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        )

    def big_loss(model, x, y):  # gradients far above the clip threshold
        return 1000.0 * F.cross_entropy(model(x), y)

    x, y = stripes(64)
    reported: dict[str, list] = {"clip": [], "none": []}
    handle = register_optimizer_step_pre_hook(record_norm)
    try:
        for key, clip in (("clip", 0.5), ("none", None)):
            on_step = reported[key].append
            train(tiny_vit(), cpu_config(steps=5, grad_clip=clip), x, y, loss_fn=big_loss, on_step=on_step)
    finally:
        handle.remove()
    clipped, unclipped = seen[:5], seen[5:]
    assert all(n <= 0.5 * (1 + 1e-5) for n in clipped)
    assert all(n > 0.5 for n in unclipped)  # without clipping the same problem exceeds the bound
    assert all(info.grad_norm > 0.5 for info in reported["clip"])  # pre-clip norms were above it
    assert all(info.grad_norm is None for info in reported["none"])


def test_label_smoothing_loss_matches_naive_formula_on_the_first_batch():
    eps = 0.2
    x, y = stripes(64)
    model = tiny_vit()
    before = copy.deepcopy(model)
    infos = []
    train(model, cpu_config(steps=1, label_smoothing=eps, seed=7), x, y, on_step=infos.append)
    idx = global_batch_indices(0, len(x), 16, seed=7)
    with torch.no_grad():
        logp = torch.log_softmax(before(x[idx]).double(), dim=-1)  # (16, 2)
    nll = -logp[torch.arange(16), y[idx]]  # (16,)
    uniform = -logp.mean(dim=-1)  # (16,) cross-entropy against the uniform distribution
    naive = float(((1 - eps) * nll + eps * uniform).mean())
    assert infos[0].loss == pytest.approx(naive, abs=1e-6)
    assert abs(naive - float(nll.mean())) > 1e-3  # smoothing really changed the loss here


def test_distillation_loss_matches_naive_kl_plus_cross_entropy():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (6,), generator=g)
    tau, alpha = 2.5, 0.7
    got = distillation_loss(s, t, y, tau, alpha)
    kl = 0.0
    for i in range(6):
        pt = [math.exp(v / tau) for v in t[i].tolist()]
        ps = [math.exp(v / tau) for v in s[i].tolist()]
        pt, ps = [v / sum(pt) for v in pt], [v / sum(ps) for v in ps]
        kl += sum(a * math.log(a / b) for a, b in zip(pt, ps)) / 6
    ce = (
        sum(
            -math.log(math.exp(s[i, y[i]].item()) / sum(math.exp(v) for v in s[i].tolist())) for i in range(6)
        )
        / 6
    )
    assert got.item() == pytest.approx(alpha * tau**2 * kl + (1 - alpha) * ce, rel=1e-10)
    got.backward()
    assert s.grad is not None and t.grad is None  # the teacher is not trained through the loss


def test_custom_loss_fn_is_what_the_loop_optimizes():
    x, y = stripes(64)
    teacher = tiny_vit(seed=5).eval()
    student = tiny_vit(seed=0)
    before = copy.deepcopy(student)

    def kd(model, xb, yb):
        with torch.no_grad():
            t = teacher(xb)
        return distillation_loss(model(xb), t, yb, tau=2.0, alpha=0.5)

    infos = []
    train(student, cpu_config(steps=1), x, y, loss_fn=kd, on_step=infos.append)
    idx = global_batch_indices(0, len(x), 16, seed=0)
    with torch.no_grad():
        expected = float(distillation_loss(before(x[idx]), teacher(x[idx]), y[idx], 2.0, 0.5))
    assert infos[0].loss == pytest.approx(expected, abs=1e-6)


def test_epoch_budget_drops_the_partial_batch_and_reshuffles_each_epoch():
    n, b = 100, 32  # 3 full batches per epoch, 4 samples dropped
    x, y = stripes(n)
    result = train(tiny_vit(), cpu_config(epochs=2, batch_size=b), x, y)
    assert result.steps == 6
    epoch0 = torch.cat([global_batch_indices(s, n, b, seed=0) for s in range(3)])
    epoch1 = torch.cat([global_batch_indices(s, n, b, seed=0) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 96 and len(set(epoch1.tolist())) == 96
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch_permutation(n, 0, 1), epoch_permutation(n, 0, 1))
    assert not torch.equal(epoch_permutation(n, 0, 1), epoch_permutation(n, 1, 0))


def test_only_listed_parameters_train_and_frozen_flags_come_back():
    x, y = stripes(64)
    model = tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, cpu_config(steps=3), x, y, params=[model.head.weight, model.head.bias])
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in model.parameters())


def _crash_at(step: int):
    class Crash(Exception):
        pass

    def on_step(info):
        if info.step == step:
            raise Crash

    return Crash, on_step


def test_resume_after_a_crash_continues_bit_identically(tmp_path, device):
    x, y = stripes(96)
    # drop_path makes the result depend on the torch RNG, so restoring it is part of what is checked.
    cfg = cpu_config(steps=20, checkpoint_every=5, eval_every=5, device=device.type, amp="auto")
    straight = tiny_vit(drop_path_rate=0.2)
    ref = train(straight, cfg, x[:64], y[:64], x[64:], y[64:])

    crash, on_step = _crash_at(13)
    with pytest.raises(crash):  # dies after step 13; the last checkpoint is step 10
        train(tiny_vit(drop_path_rate=0.2), cfg, x[:64], y[:64], x[64:], y[64:],
              checkpoint_dir=tmp_path, on_step=on_step)  # fmt: skip
    fresh = tiny_vit(seed=123, drop_path_rate=0.2)  # new objects, other weights, other RNG state
    torch.manual_seed(999)
    resumed = train(fresh, cfg, x[:64], y[:64], x[64:], y[64:], checkpoint_dir=tmp_path, resume=True)

    assert resumed.resumed_from_step == 10
    for (name, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name

    def drop_timing(r):
        return [(h.step, h.train_loss, h.val_loss, h.val_acc, h.lr) for h in r.history]

    assert drop_timing(resumed) == drop_timing(ref)
    # Resuming a finished run trains nothing more and reports the same history.
    again = tiny_vit(seed=5, drop_path_rate=0.2)
    done = train(again, cfg, x[:64], y[:64], x[64:], y[64:], checkpoint_dir=tmp_path, resume=True)
    assert done.resumed_from_step == 20 and drop_timing(done) == drop_timing(ref)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), again.parameters()))


@pytest.mark.parametrize("change", [{"lr": 1e-3}, {"seed": 1}, {"steps": 30}, {"label_smoothing": 0.1}])
def test_resume_refuses_a_checkpoint_written_with_another_config(tmp_path, change):
    x, y = stripes(64)
    train(tiny_vit(), cpu_config(steps=4), x, y, checkpoint_dir=tmp_path)
    with pytest.raises(InvalidInputError, match=next(iter(change))):
        train(tiny_vit(), cpu_config(**{"steps": 4, **change}), x, y, checkpoint_dir=tmp_path, resume=True)
    # Settings that do not change the trajectory may differ.
    train(
        tiny_vit(), cpu_config(steps=4, log_every=3, eval_every=2), x, y, checkpoint_dir=tmp_path, resume=True
    )


def test_resume_refuses_other_data_or_other_trained_parameters(tmp_path):
    x, y = stripes(64)
    model = tiny_vit()
    train(model, cpu_config(steps=4), x, y, checkpoint_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="different data"):
        train(tiny_vit(), cpu_config(steps=4), x + 1, y, checkpoint_dir=tmp_path, resume=True)
    other = tiny_vit()
    with pytest.raises(InvalidInputError, match="different data or a different set of trained parameters"):
        train(
            other, cpu_config(steps=4), x, y, params=[other.head.weight], checkpoint_dir=tmp_path, resume=True
        )


def test_truncated_or_foreign_checkpoint_is_invalid_input(tmp_path):
    x, y = stripes(64)
    train(tiny_vit(), cpu_config(steps=2), x, y, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="cannot read training checkpoint"):
        train(tiny_vit(), cpu_config(steps=2), x, y, checkpoint_dir=tmp_path, resume=True)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(InvalidInputError, match="not a wave-deploy training checkpoint"):
        train(tiny_vit(), cpu_config(steps=2), x, y, checkpoint_dir=tmp_path, resume=True)


def test_checkpoint_loads_with_weights_only_and_holds_the_resume_state(tmp_path):
    x, y = stripes(64)
    model = tiny_vit()
    train(model, cpu_config(steps=3), x, y, checkpoint_dir=tmp_path)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["step"] == 3 and ckpt["config"]["lr"] == 3e-3
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == 3
    assert len(ckpt["rng"]["torch_cpu"]) == 1 and ckpt["rng"]["torch_cpu"][0].dtype == torch.uint8
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())  # atomic write left no temp file


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"steps": 5, "epochs": 1.0}, "exactly one of steps or epochs"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": 5, "lr": -1.0}, "lr must be a positive number"),
        ({"steps": 5, "label_smoothing": 1.0}, "label_smoothing"),
        ({"steps": 5, "amp": "int8"}, "amp must be one of"),
        ({"steps": 5, "data_placement": "disk"}, "data_placement must be one of"),
        ({"steps": 5, "compile": "yes"}, "compile must be true or false"),
        ({"steps": 5, "batch_size": 65}, "larger than the training set"),
    ],
)
def test_invalid_configs_are_rejected_as_invalid_input(kw, match):
    x, y = stripes(64)
    with pytest.raises(InvalidInputError, match=match):
        train(tiny_vit(), cpu_config(**kw), x, y)


def test_invalid_data_is_rejected_as_invalid_input():
    x, y = stripes(64)
    cfg = cpu_config(steps=1)
    with pytest.raises(InvalidInputError, match="int64"):
        train(tiny_vit(), cfg, x, y.int())
    with pytest.raises(InvalidInputError, match=r"\(N, C, H, W\)"):
        train(tiny_vit(), cfg, x[:, 0], y)
    with pytest.raises(InvalidInputError, match="both val_x and val_y"):
        train(tiny_vit(), cfg, x, y, x)
    model = tiny_vit()
    with pytest.raises(InvalidInputError, match="does not belong to the model"):
        train(model, cfg, x, y, params=[torch.nn.Parameter(torch.zeros(3))])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_mixed_precision_or_cuda_without_a_gpu_is_a_missing_hardware_error():
    x, y = stripes(64)
    for kw in ({"amp": "bf16"}, {"amp": "fp16"}, {"device": "cuda"}):
        with pytest.raises(MissingDependencyError):
            train(tiny_vit(), cpu_config(steps=1, **{"device": "auto", **kw}), x, y)
    for placement in ("device", "pinned", "pageable"):  # copies to a GPU: there is none
        with pytest.raises(MissingDependencyError, match=f"data placement '{placement}' needs a CUDA device"):
            train(tiny_vit(), cpu_config(steps=1, data_placement=placement), x, y)


def test_a_cpu_run_indexes_its_data_in_place_and_says_so():
    x, y = stripes(64)
    result = train(tiny_vit(), cpu_config(steps=2), x, y)
    assert result.data_placement == "host" and result.compiled is False


def test_every_cuda_data_placement_trains_bit_identically(device):
    """The training set on the GPU, copied through pinned buffers, or from pageable memory: same batches,
    so the same weights (deterministic kernels, as the device fixture sets them). Runs in scripts/gpu_check.sh
    (WAVE_DEPLOY_TEST_DEVICE=cuda)."""
    if device.type != "cuda":
        pytest.skip("the placements differ only on CUDA")
    x, y = stripes(160)
    weights = {}
    for placement in ("device", "pinned", "pageable"):
        model = tiny_vit(drop_path_rate=0.1)
        cfg = cpu_config(steps=12, device="cuda", amp="off", data_placement=placement)
        result = train(model, cfg, x[:128], y[:128], x[128:], y[128:])
        assert result.data_placement == placement
        weights[placement] = [p.detach().cpu() for p in model.parameters()]
    for placement in ("pinned", "pageable"):
        assert all(torch.equal(a, b) for a, b in zip(weights["device"], weights[placement])), placement


def test_rich_progress_adapter_shows_steps_loss_accuracy_and_throughput():
    from rich.console import Console

    from wave_deploy.cli.progress import TrainingProgress

    x, y = stripes(96)
    out = io.StringIO()
    with TrainingProgress("scalers", console=Console(file=out, width=150, force_terminal=True)) as bar:
        train(tiny_vit(), cpu_config(steps=6, log_every=2, eval_every=3), x[:64], y[:64], x[64:], y[64:],
              on_step=bar)  # fmt: skip
    text = out.getvalue()
    assert "scalers" in text and "6/6" in text
    assert "loss " in text and "val acc " in text and "img/s" in text
