"""Accuracy proxy for size choice (``--objective accuracy``): each candidate size sliced from the bank, before any
stage-2 training, scored on the validation split in seconds. One score per depth x width, at the data's image
size: the candidates of a multi-resolution search share their depth x width's score.

- The bank's own task: the sliced model (templates + the auxiliary scalers' slice, its templated head) as is.
- A new task: the sliced body is frozen and a linear head is fitted on its features (``probe_steps`` full-batch
  AdamW steps on the train split's pre-logits), since a fresh head scores chance.

Scores are cached as JSON under ``$XDG_CACHE_HOME/wave-deploy/scores`` (default ``~/.cache``), keyed by the bank
file's sha256 and the data's fingerprint, so a second plan or build with the same bank and data costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from wave_deploy import data as datasets
from wave_deploy.errors import UsageError
from wave_deploy.fileio import sha256_file, write_json
from wave_deploy.spec import ViTSpec
from wave_deploy.training.folding import fold, load_folded
from wave_deploy.training.loop import evaluate
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.init import init_wave_model, is_bank_task

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wave-deploy" / "scores"


def _key(spec: ViTSpec) -> str:
    return f"L{spec.depth}_D{spec.embed_dim}_H{spec.num_heads}"


@torch.no_grad()
def _features(model, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    out = [model.forward_head(model.forward_features(x[i : i + batch]), pre_logits=True) for i in
           range(0, len(x), batch)]  # fmt: skip
    return torch.cat(out)


def _probe_accuracy(model, data, steps: int, seed: int) -> float:
    """Fit a linear head on frozen features (full batch), return its val accuracy."""
    f_train, f_val = _features(model, data.train_x), _features(model, data.val_x)
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(f_train.shape[1], data.info.num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    y = data.train_labels
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(f_train), y).backward()
        opt.step()
    with torch.no_grad():
        return float((head(f_val).argmax(1) == data.val_labels).float().mean())


def sliced_accuracy(bank, spec: ViTSpec, data, *, probe_steps: int = 100, seed: int = 0) -> float:
    """Validation accuracy of ``spec`` sliced from ``bank`` with no stage-2 training (see the module doc)."""

    same_task = is_bank_task(bank, data.info.class_names)
    if spec.num_classes != data.info.num_classes:
        spec = spec.replace(num_classes=data.info.num_classes)
    if spec.img_size != data.info.img_size:  # one score per depth x width, at the data's image size
        spec = spec.replace(img_size=data.info.img_size)
    wave = init_wave_model(bank, spec, "aux", seed=seed, same_task=same_task)
    state, folded_spec = fold(wave.cpu())
    model = load_folded(state, folded_spec).eval()
    if same_task:
        return float(evaluate(model, data.val_x, data.val_labels, 512, torch.device("cpu"))[1])
    return _probe_accuracy(model, data, probe_steps, seed)


def score_sizes(
    bank_path, specs, data, *, probe_steps: int = 100, use_cache: bool = True
) -> dict[str, float]:
    """{"L{d}_D{e}_H{h}": sliced accuracy} for every spec, from the cache where present."""

    bank_path = Path(bank_path)
    cache = cache_dir() / f"{sha256_file(bank_path)[:16]}-{data.info.fingerprint[:16]}-p{probe_steps}.json"
    scores: dict[str, float] = {}
    if use_cache and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("version") == CACHE_VERSION:
                scores = {str(k): float(v) for k, v in stored["scores"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring an unreadable score cache %s", cache)
    missing = list({_key(s): s for s in specs if _key(s) not in scores}.values())  # one per depth x width
    if missing:
        bank = TemplateBank.load(bank_path)
        for spec in missing:
            scores[_key(spec)] = sliced_accuracy(bank, spec, data, probe_steps=probe_steps)
            log.info("sliced %s: val accuracy %.4f", spec.name, scores[_key(spec)])
        if use_cache:
            try:
                write_json(cache, {"version": CACHE_VERSION, "bank": str(bank_path), "scores": scores})
            except OSError as err:  # a read-only home must not stop the plan
                log.warning("could not write the score cache %s: %s", cache, err)
    return {_key(s): scores[_key(s)] for s in specs}


def bank_data(bank_path):
    """The data a bank was built on, from its provenance: the built-in MNIST-5k or an ImageFolder still present."""

    bank = TemplateBank.load(bank_path)
    source = bank.provenance.get("data", {}).get("source")
    g = bank.geometry
    builtin_geometry = (g.in_chans, g.img_size) == (1, 28)
    if source == datasets.BUILTIN_SOURCE or (source is None and builtin_geometry):
        return datasets.load_builtin()
    if source and Path(source).is_dir():
        return datasets.load_for_bank(source, in_chans=g.in_chans, img_size=g.img_size)
    raise UsageError(
        f"--objective accuracy scores sizes on the bank's data, but its source {source!r} is not available here",
        hint="give --data DIR: the sizes are then scored on that data (plan and build alike)",
    )


def accuracy_table(bank_path, specs, data, **kwargs):
    """A selection.AccuracyTable (callable on a spec) over ``specs``."""
    scores = score_sizes(bank_path, specs, data, **kwargs)
    return lambda spec: scores.get(_key(spec))
