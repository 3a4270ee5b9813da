"""ONNX export: one checked file, dynamic batch, fused LayerNorm, deterministic bytes, the fp32 parity gate.

The fp16 / int8 variants are tested in test_quantize.py.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import onnx
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.errors import (
    EXIT_MISSING_DEPENDENCY,
    EXIT_PARITY_FAILED,
    MissingDependencyError,
    ParityError,
    UsageError,
)
from wave_deploy.exporters import onnx as ox
from wave_deploy.spec import ViTSpec

SPEC = ViTSpec(depth=2, embed_dim=32, num_heads=2, patch_size=7, img_size=28, in_chans=1)


def make_model(spec: ViTSpec = SPEC, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(**spec.timm_kwargs()).eval()


@pytest.fixture(scope="module")
def dynamo_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamo")
    model = make_model()
    result = ox.export_onnx(model, SPEC, out / "model.onnx", batch_min=1, batch_max=8)
    return model, result, out


def test_dynamo_export_is_one_checked_file_with_dynamic_batch_and_one_layernorm_node_per_norm(dynamo_export):
    _, result, out = dynamo_export
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no .data sidecar, no temp leftovers
    proto = onnx.load(result.path)
    onnx.checker.check_model(proto, full_check=True)
    assert result.exporter == "dynamo" and result.opset == 18
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    assert isinstance(result.input_shape[0], str) and result.input_shape[1:] == [1, 28, 28]
    assert isinstance(result.output_shape[0], str) and result.output_shape[1:] == [10]
    ops = [n.op_type for n in proto.graph.node]
    # two norms per block plus the final norm, each a single node (no ReduceMean/Pow decomposition)
    assert ops.count("LayerNormalization") == result.layernorm_nodes == 2 * SPEC.depth + 1
    assert "ReduceMean" not in ops
    assert result.size_bytes == (out / "model.onnx").stat().st_size
    # no exporter stack traces naming this machine's install paths end up in the shipped file
    assert Path(torch.__file__).parent.parent.as_posix().encode() not in (out / "model.onnx").read_bytes()


def test_two_exports_of_the_same_seeded_model_are_byte_identical(tmp_path, dynamo_export):
    _, first, _ = dynamo_export
    again = ox.export_onnx(make_model(seed=0), SPEC, tmp_path / "again.onnx", batch_min=1, batch_max=8)
    assert (tmp_path / "again.onnx").read_bytes() == Path(first.path).read_bytes()
    assert again.sha256 == first.sha256
    other = ox.export_onnx(make_model(seed=1), SPEC, tmp_path / "other.onnx", batch_min=1, batch_max=8)
    assert other.sha256 != first.sha256  # the bytes do depend on the weights


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_onnxruntime_matches_torch_within_1e4_at_batch_min_and_max(tmp_path, exporter):
    spec = ViTSpec(depth=3, embed_dim=48, num_heads=3, patch_size=4)
    model = make_model(spec, seed=3)
    path = tmp_path / "m.onnx"
    ox.export_onnx(model, spec, path, exporter=exporter, opset=17, batch_min=2, batch_max=5)
    inputs = [ox.seeded_inputs(spec, b, seed=b) for b in (2, 5)]
    report = ox.check_parity(path, model, inputs)
    assert report.passed and report.max_abs_err <= 1e-4
    assert [b["batch"] for b in report.batches] == [2, 5]


def test_parity_gate_raises_exit_7_with_the_measured_error_when_weights_drift(tmp_path, dynamo_export):
    _, result, _ = dynamo_export
    tampered = make_model()
    with torch.no_grad():
        tampered.head.bias += 0.25  # the ONNX file still holds the old bias
    inputs = [ox.seeded_inputs(SPEC, 1), ox.seeded_inputs(SPEC, 8, seed=1)]
    with pytest.raises(ParityError) as info:
        ox.check_parity(result.path, tampered, inputs)
    assert info.value.exit_code == EXIT_PARITY_FAILED
    measured = float(re.search(r"max abs error ([0-9.e+-]+)", str(info.value)).group(1))
    assert measured == pytest.approx(0.25, rel=1e-3)


def test_opset_below_17_and_unknown_exporter_are_refused(tmp_path):
    with pytest.raises(UsageError, match="opset >= 17"):
        ox.export_onnx(make_model(), SPEC, tmp_path / "m.onnx", opset=16)
    with pytest.raises(UsageError, match="exporter"):
        ox.export_onnx(make_model(), SPEC, tmp_path / "m.onnx", exporter="tracing")
    assert not (tmp_path / "m.onnx").exists()


def test_slimming_needs_onnxslim_and_never_changes_outputs(tmp_path):
    model = make_model()
    if importlib.util.find_spec("onnxslim") is None:
        with pytest.raises(MissingDependencyError) as info:
            ox.export_onnx(model, SPEC, tmp_path / "m.onnx", exporter="legacy", slim=True)
        assert info.value.exit_code == EXIT_MISSING_DEPENDENCY
        assert not (tmp_path / "m.onnx").exists()
        return
    result = ox.export_onnx(model, SPEC, tmp_path / "m.onnx", exporter="legacy", slim=True)
    assert result.slimmed
    assert ox.check_parity(result.path, model, [ox.seeded_inputs(SPEC, 3)]).passed
