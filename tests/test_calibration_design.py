"""The calibration design: which points (quick or full, on every bank), the graphs that ship without weights
(a replicated block is a fresh export of that depth, for every variant), the weights the kit writes, the memory
bound checked before anything is allocated, and the time estimate's arithmetic."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from wave_deploy._kit import kit_design

from wave_deploy.calibration import calibrate as cal
from wave_deploy.calibration import cost
from wave_deploy.calibration import graphs as dg
from wave_deploy.calibration.bundle import bundle_space
from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE, SearchSpace
from wave_deploy.spec import ViTSpec
from wave_deploy.target import FP16, FP32, INT8_ORT_DYNAMIC, INT8_ORT_STATIC, INT8_TENSORRT

SPEC = ViTSpec(depth=3, embed_dim=32, num_heads=2, img_size=16, patch_size=8, in_chans=3, num_classes=5)


def _fresh(spec, variant, tmp_path, exporter="legacy"):
    """A fresh export of ``spec`` at its full depth (random weights), made into ``variant``."""
    import onnx
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.exporters.onnx import export_onnx
    from wave_deploy.exporters.quantize import make_variant

    torch.manual_seed(1)
    model = VisionTransformer(**spec.timm_kwargs()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    path = tmp_path / "fresh.onnx"
    export_onnx(model, spec, path, exporter=exporter, batch_max=4)
    if variant.precision != "fp32":
        make_variant(variant, path, tmp_path / "fresh.variant.onnx")
        path = tmp_path / "fresh.variant.onnx"
    return onnx.load(str(path))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize(
    "variant, op",
    [
        (FP32, "MatMul"),
        (FP16, "Cast"),
        (INT8_ORT_STATIC, "QuantizeLinear"),
        (INT8_ORT_DYNAMIC, "MatMulInteger"),
        (INT8_TENSORRT, "DequantizeLinear"),
    ],
)
def test_a_replicated_block_is_the_graph_a_fresh_export_of_that_depth_gives(tmp_path, variant, op, exporter):
    import onnx

    graphs = dg.design_graphs([SPEC.replace(depth=1), SPEC], variant, workdir=tmp_path, exporter=exporter)
    replicated = onnx.load_from_string(graphs[SPEC].graph)
    assert dg.structure(replicated) == dg.structure(_fresh(SPEC, variant, tmp_path, exporter))
    assert op in {n.op_type for n in replicated.graph.node}
    one = onnx.load_from_string(graphs[SPEC.replace(depth=1)].graph)
    assert dg.structure(one) != dg.structure(replicated)  # the structure tells depths apart
    # nothing of the weights ships: every large tensor is external, within the declared data size
    assert all(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in replicated.graph.initializer
        if int(np.prod(t.dims)) >= dg.EXTERNAL_MIN_ELEMENTS and t.data_type != onnx.TensorProto.INT64
    )
    kit_design.check_tensors(graphs[SPEC].tensors, graphs[SPEC].data_bytes)


def test_materialized_weights_run_in_onnxruntime_are_reproducible_and_distinct_per_block(tmp_path):
    import onnxruntime as ort

    graph = dg.design_graphs([SPEC], INT8_ORT_STATIC, workdir=tmp_path, exporter="legacy")[SPEC]
    (tmp_path / "g.onnx").write_bytes(graph.graph)
    data = tmp_path / f"{SPEC.name}.data"
    kit_design.write_data(data, graph.tensors, graph.data_bytes, seed=3)
    first = data.read_bytes()
    kit_design.write_data(data, graph.tensors, graph.data_bytes, seed=3)
    assert data.read_bytes() == first and len(first) == graph.data_bytes
    fills = {tuple(f) for *_, f in graph.tensors}
    assert ("const", dg.CONST_SCALE) in fills and ("const", 0) in fills and ("int", -127, 127) in fills
    # the blocks' int8 weight matrices: the same shape, different bytes (no block shares memory with another)
    weights = [(o, n) for o, n, dtype, fill in graph.tensors if dtype == "int8" and fill[0] == "int"]
    same_size = [w for w in weights if w[1] == max(n for _, n in weights)]
    assert len({first[o : o + n] for o, n in same_size}) == len(same_size) >= SPEC.depth
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.ones((2, 3, 16, 16), np.float32)})[0]
    assert out.shape == (2, 5) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "entry, data_bytes",
    [
        ([[0, 8, "float64", ["normal", 0.02]]], 64),  # unknown element type
        ([[0, 6, "float32", ["normal", 0.02]]], 64),  # not a whole number of elements
        ([[32, 64, "float32", ["normal", 0.02]]], 64),  # beyond the data file
        ([[0, 16, "int8", ["int", 0, 1]], [8, 8, "int8", ["int", 0, 1]]], 64),  # overlapping
        ([[0, 16, "int8", ["int", 0, 1]]], -1),
    ],
)
def test_the_kit_refuses_tensor_entries_that_do_not_describe_a_data_file(entry, data_bytes):
    with pytest.raises(kit_design.DesignError):
        kit_design.check_tensors(entry, data_bytes)


def _space(img, patch, max_depth, widths, head=32):
    return SearchSpace(
        img_size=img, patch_size=patch, in_chans=1, num_classes=10, mlp_ratio=4.0, w=head, head_dim=head,
        max_depth=max_depth, max_embed_dim=widths * head,
    )  # fmt: skip


@pytest.mark.parametrize(
    "img, patch, max_depth, widths, batch_max",
    [
        (i, p, d, w, b)
        for (i, p), d, w, b in itertools.product([(28, 4), (224, 16)], [1, 2, 3, 12], [1, 2, 12], [1, 2, 8])
    ],
)
def test_quick_is_a_subset_of_the_full_design_with_enough_points_or_says_what_to_pass(
    img, patch, max_depth, widths, batch_max
):
    space = _space(img, patch, max_depth, widths)
    batches = cal.default_batches(space, batch_max)
    possible = max_depth * widths * len({*batches, *(b for b in (1, 2, 4, 8, 16) if b <= batch_max)})
    if possible < cal.MIN_POINTS:
        with pytest.raises(InvalidInputError) as info:
            cal.design_samples(space, batch_max, quick=True, batches=batches)
        assert "needs at least 8 measurements" in str(info.value) and "--max-depth" in info.value.hint
        return
    full = cal.design_samples(space, batch_max, batches=batches)
    quick = cal.design_samples(space, batch_max, quick=True, batches=batches)
    assert len(quick) >= cal.MIN_POINTS and len(full) >= cal.MIN_POINTS
    assert set(quick) <= set(full) and len(set(full)) == len(full)
    assert max(s.embed_dim for s, _ in quick) == max(s.embed_dim for s, _ in full)  # the range is covered


def test_the_hint_for_a_small_bank_is_enough():
    space = _space(224, 16, 1, 1)
    with pytest.raises(InvalidInputError) as info:
        cal.design_samples(space, 2, quick=True, batches=cal.default_batches(space, 2))
    depth = int(info.value.hint.split("--max-depth ")[1].split()[0])
    widened = cal.calibration_space(space, max_depth=depth)
    assert len(cal.design_samples(widened, 2, quick=True, batches=cal.default_batches(widened, 2))) >= 8


def test_quick_calibration_of_a_small_bank_at_224_px_no_longer_fails():
    space = cal.calibration_space(DEFAULT_SEARCH_SPACE, img_size=224, patch_size=16, in_chans=3, head_dim=64)
    points = cal.design_samples(space, 16, quick=True, batches=cal.default_batches(space, 16))
    assert len(points) >= 8 and {s.head_dim for s, _ in points} == {64}


def test_a_design_that_needs_more_memory_than_the_machine_has_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "c.json"
    result = CliRunner().invoke(
        cli, ["calibrate", "--profile", "x86", "--img-size", "4096", "--patch-size", "1", "--out", str(out)]
    )
    assert result.exit_code == 3, result.output
    assert "needs about" in result.output and "available" in result.output and not out.exists()
    assert "Traceback" not in result.output and "estimated" not in result.output
    points = [(SPEC, 1)]
    need = cost.point_memory_mib(SPEC, 1, "fp32", "fp32", "onnxruntime")
    assert cost.check_memory(points, weight_prec="fp32", act_prec="fp32", runtime="onnxruntime",
                             exports=False, available=need + 1) == need  # fmt: skip
    with pytest.raises(InvalidInputError, match="depth 3, width 32, batch 1"):
        cost.check_memory(points, weight_prec="fp32", act_prec="fp32", runtime="onnxruntime", exports=False,
                          available=need - 1)  # fmt: skip


def test_the_time_estimate_prices_each_point_by_its_timing_settings():
    timing = {"warmup": 10, "iterations": 30, "min_duration_s": 0.3}
    assert kit_design.point_seconds(20.0, timing, 3) == pytest.approx(3 * (10 * 0.02 + 30 * 0.02))
    assert kit_design.point_seconds(1.0, timing, 2) == pytest.approx(2 * (10 * 0.001 + 0.3))  # duration floor
    fast, slow = (kit_design.estimate_latency_ms(1.0, 16, g) for g in (100.0, 10.0))
    assert slow > fast > 0
    points = cal.design_samples(DEFAULT_SEARCH_SPACE, 8)
    est = cost.estimate(points, timing, 3, gflops=50.0, widths=6, exporter="dynamo", variant_made=False,
                        memory_mib=100.0)  # fmt: skip
    twice = cost.estimate(points, timing, 6, gflops=50.0, widths=6, exporter="dynamo", variant_made=False,
                          memory_mib=100.0)  # fmt: skip
    assert (
        twice.measure_s == pytest.approx(2 * est.measure_s)
        and est.prepare_s == cost.EXPORT_S["dynamo"][0] + 6 * cost.EXPORT_S["dynamo"][1]
    )
    assert sum(est.point_s.values()) < est.measure_s  # plus writing each model's weights once per pass


def test_calibrate_measures_the_head_size_and_mlp_ratio_asked_for(tmp_path):
    out = tmp_path / "c.json"
    args = ["calibrate", "--profile", "x86-cpu", "--img-size", "8", "--patch-size", "4", "--in-chans", "1",
            "--head-dim", "16", "--mlp-ratio", "2", "--max-depth", "2", "--max-embed-dim", "32", "--quick",
            "--threads", "1", "--clock", "thread", "--exporter", "legacy", "--out", str(out), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["geometry"]["head_dim"] == 16 and data["geometry"]["mlp_ratio"] == 2.0
    assert {(s["embed_dim"], s["num_heads"]) for s in data["samples"]} == {(16, 1), (32, 2)}
    assert data["source"] == {"kind": "local", "samples_file": None, "samples_sha256": None}
    lines = result.stderr.splitlines()
    assert (
        lines[0].startswith("calibrate x86-cpu: 8 measurements of 4 models at 8 px")
        and "estimated" in lines[0]
    )
    assert "calibrate: measure 4/4 (pass 1/1)" in result.stderr and json.loads(result.stdout)["path"] == str(
        out
    )
    # the widths a bank of that head size serves: multiples of the head size whose MLP width is one too
    space = cal.calibration_space(DEFAULT_SEARCH_SPACE, head_dim=16, mlp_ratio=1.3)
    assert space.widths() == [160, 320] and all((w * 1.3) % 16 == 0 for w in space.widths())
    assert cal.calibration_space(DEFAULT_SEARCH_SPACE, head_dim=64).widths() == [64, 128, 192, 256, 320, 384]
    with pytest.raises(InvalidInputError, match="no width up to 64 has an MLP width"):
        cal.calibration_space(DEFAULT_SEARCH_SPACE, head_dim=16, mlp_ratio=1.3, max_width=64)


def test_the_default_output_is_in_the_working_directory_not_the_package(tmp_path, monkeypatch):
    from wave_deploy.profiles import load_profile

    monkeypatch.chdir(tmp_path)
    path = cal.default_calibration_path(load_profile("x86"))
    assert path == tmp_path / "x86-cpu.calibration.json"


@pytest.mark.parametrize(
    "mlp_ratio, heads, head_dim", [(4.0, 3, 64), (2.5, 4, 2), (1.5, 2, 16), (4 / 3, 6, 32), (3.0, 1, 7)]
)
def test_a_bundles_design_covers_its_model_with_whole_mlp_widths(mlp_ratio, heads, head_dim):
    spec = ViTSpec(depth=14, embed_dim=heads * head_dim, num_heads=heads, mlp_ratio=mlp_ratio)
    space = bundle_space(spec)
    widths = space.widths()
    assert spec.embed_dim in widths and space.max_depth == 14 and space.head_dim == head_dim
    assert all(w * mlp_ratio == int(w * mlp_ratio) and w % head_dim == 0 for w in widths)
    points = cal.design_samples(space, 8, batches=cal.default_batches(space, 8))
    assert len(points) >= cal.MIN_POINTS  # every design point is a valid timm model


def test_a_bundles_design_too_large_to_export_here_is_refused_before_anything_is_written(
    tmp_path, monkeypatch
):
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.calibration import bundle as cal_bundle
    from wave_deploy.calibration import design
    from wave_deploy.profiles import load_profile
    from wave_deploy.training.folding import save_folded

    profile = load_profile("x86")
    need = cal_bundle.check_design_memory(SPEC, profile)
    specs = list(dict.fromkeys(s for s, _ in design.bundle_points(bundle_space(SPEC), profile, quick=False)))
    assert need == max(cost.export_memory_mib(s) for s in specs)
    assert max(s.embed_dim for s in specs) == 384  # the design stretches to the bank's widths
    assert cost.check_export_memory(specs, available=need + 1) == need
    with pytest.raises(InvalidInputError, match="width 384") as info:
        cost.check_export_memory(specs, available=need - 1)
    assert info.value.exit_code == 3
    # bundle_design: refused before any graph is exported or the archive written
    monkeypatch.setattr(cost.probe, "available_memory_mib", lambda: need - 1)
    monkeypatch.setattr(cal_bundle, "design_graphs", lambda *a, **k: pytest.fail("exported"))
    path = tmp_path / "calibration.zip"
    with pytest.raises(InvalidInputError, match="to export"):
        cal_bundle.bundle_design(path, SPEC, profile, exporter="legacy", opset=18)
    assert not path.exists()
    monkeypatch.undo()
    # `wave-deploy export` of a model whose design is beyond any machine (1024 px at patch 4, width 384 in the
    # design: 65537 tokens): exit 3, one line, nothing written, before the model itself is exported
    big = SPEC.replace(img_size=1024, patch_size=4)
    torch.manual_seed(0)
    checkpoint = save_folded(
        tmp_path / "big.safetensors", VisionTransformer(**big.timm_kwargs()).state_dict(), big
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--profile", "x86", "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "calibration design needs about" in result.output and "Traceback" not in result.output
    assert not out.exists() or list(out.iterdir()) == []
