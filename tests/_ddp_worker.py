"""Worker for tests/test_distributed.py: trains a tiny timm ViT, under torchrun (gloo, CPU) or alone.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py OUT_DIR
Each rank writes OUT_DIR/rank{r}.json (sha256 of its parameters, its validation metrics, how many progress
callbacks it received); rank 0 also writes OUT_DIR/final.safetensors and the training checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.training import distributed as D
from wave_deploy.training.loop import TrainConfig, train

GLOBAL_BATCH = 32
CONFIG = TrainConfig(
    steps=6, batch_size=GLOBAL_BATCH, lr=2e-3, warmup_steps=2, grad_clip=1.0, eval_every=3,
    checkpoint_every=3, log_every=1, device="cpu", amp="off", seed=3,
)  # fmt: skip


def problem() -> tuple[torch.Tensor, ...]:
    """Two classes by which half of an 8x8 image is brighter; 160 train and 40 val images."""
    g = torch.Generator().manual_seed(11)
    y = torch.randint(0, 2, (200,), generator=g)  # (200,)
    x = 0.5 * torch.randn(200, 1, 8, 8, generator=g)  # (200, 1, 8, 8)
    x[y == 0, :, :, :4] += 1.0
    x[y == 1, :, :, 4:] += 1.0
    return x[:160], y[:160], x[160:], y[160:]


def params_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(100 + D.rank())  # ranks start from different weights: DDP must broadcast rank 0's
    model = VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, num_classes=2, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0
    )
    calls = []
    result = train(model, CONFIG, *problem(), checkpoint_dir=out_dir / "ckpt", on_step=calls.append)
    record = {
        "rank": D.rank(),
        "world_size": result.world_size,
        "sha256": params_sha256(model),
        "val_loss": result.final_val_loss,
        "val_acc": result.final_val_acc,
        "history": [(h.step, h.train_loss, h.val_loss, h.val_acc) for h in result.history],
        "progress_calls": len(calls),
    }
    (out_dir / f"rank{D.rank()}.json").write_text(json.dumps(record))
    if D.is_main_process():
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "final.safetensors")
        )
    return record


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]))
    D.cleanup_distributed()
