"""fp16 / int8 variants: how they are made (static QDQ, dynamic) and the accuracy gate that judges them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _tiny_mnist import SPEC, builtin_data, trained_model

from wave_deploy.errors import ParityError, UsageError
from wave_deploy.exporters import export_for_profile
from wave_deploy.exporters import onnx as ox
from wave_deploy.exporters import quantize as qz
from wave_deploy.exporters.base import data_inputs
from wave_deploy.profiles import apply_overrides, load_profile


@pytest.fixture(scope="module")
def inputs():
    return data_inputs(builtin_data(), seed=0)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    ox.export_onnx(trained_model(), SPEC, out / "model.onnx", exporter="legacy")
    return out / "model.onnx"


@pytest.fixture(scope="module")
def x86_int8_export(tmp_path_factory, inputs):
    out = tmp_path_factory.mktemp("x86")
    profile = apply_overrides(load_profile("x86-cpu"), ["runtime.precision=int8"])
    summary = export_for_profile(trained_model(), SPEC, profile, out, exporter="legacy", **inputs)
    return out, summary


def _initializers(path) -> dict:
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_data_inputs_take_the_validation_split_and_a_seeded_training_sample(inputs):
    data = builtin_data()
    assert np.array_equal(inputs["validation"], data.val_x.numpy())  # 500 images, under the 1000 cap
    assert np.array_equal(inputs["validation_labels"], data.val_labels.numpy())
    assert inputs["calibration"].shape == (256, 1, 28, 28)
    assert np.array_equal(inputs["calibration"], data_inputs(data, seed=0)["calibration"])
    assert not np.array_equal(inputs["calibration"], data_inputs(data, seed=1)["calibration"])


def test_static_int8_passes_the_accuracy_gate_on_the_builtin_data_and_records_every_top1(x86_int8_export):
    out, summary = x86_int8_export
    onnx_section = summary["onnx"]
    acc = onnx_section["accuracy"]
    assert acc["split"] == "validation" and acc["n_images"] == 500
    assert acc["torch_fp32_top1"] > 0.3  # a trained model, not chance
    assert abs(acc["torch_fp32_top1"] - acc["onnx_fp32_top1"]) <= 1 / 500  # fp32 parity: at most a tie flips
    fp16, int8 = onnx_section["variants"]
    assert (fp16["precision"], fp16["chosen"], int8["precision"], int8["chosen"]) == (
        "fp16",
        False,
        "int8",
        True,
    )
    assert int8["method"] == "static-qdq" and int8["settings"]["activations"] == "int8 symmetric"
    for v in (fp16, int8):
        assert v["passed"] and v["failure"] is None and v["rejected_to"] is None
        assert v["top1_drop_points"] == pytest.approx((acc["onnx_fp32_top1"] - v["top1"]) * 100, abs=1e-6)
        assert v["top1_drop_points"] <= v["max_drop_points"] == 1.0 and v["n_images"] == 500
        assert (out / v["file"]).is_file() and 0.9 <= v["top1_agreement"] <= 1.0
    assert onnx_section["chosen_precision"] == "int8" and onnx_section["chosen_passed"]
    assert int8["file"] == "model.int8.onnx" and not (out / "rejected").exists()
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert json.loads((out / "export.json").read_text()) == summary


def test_static_int8_recomputes_the_recorded_top1_exactly(x86_int8_export, inputs):
    out, summary = x86_int8_export
    [int8] = [v for v in summary["onnx"]["variants"] if v["precision"] == "int8"]
    logits = qz.ort_logits(out / "model.int8.onnx", inputs["validation"])
    assert int8["top1"] == float(np.mean(logits.argmax(1) == inputs["validation_labels"]))


def test_fp16_variant_stores_half_weights_and_keeps_fp32_io(tmp_path, fp32):
    path = qz.make_fp16(fp32, tmp_path / "model.fp16.onnx")
    proto = onnx.load(str(path))
    matrices = [i for i in proto.graph.initializer if len(i.dims) >= 2]
    assert matrices and all(i.data_type == onnx.TensorProto.FLOAT16 for i in matrices)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_tensorrt_int8_is_symmetric_per_channel_qdq_with_float_biases(tmp_path, fp32, inputs):
    path = tmp_path / "model.int8.qdq.onnx"
    settings = qz.make_int8_static(fp32, path, inputs["calibration"], target="tensorrt")
    assert settings["activations"] == "int8 symmetric"
    proto = onnx.load(str(path))
    inits = _initializers(path)
    zero_points = [
        inits[n.input[2]] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    ]
    assert zero_points and all(z.dtype == np.int8 and np.all(z == 0) for z in zero_points)
    assert not [a for a in inits.values() if a.dtype == np.int32]  # biases stay float for TensorRT
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                 and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim >= 2]  # fmt: skip
    assert weight_dq and all(inits[n.input[1]].size > 1 for n in weight_dq)  # one scale per output channel


def test_keep_float_sets_leave_norms_attention_and_ends_in_float(fp32):
    proto = onnx.load(str(fp32))
    by_name = {n.name: n for n in proto.graph.node}
    assert qz.quantized_nodes(proto, "none") is None
    norms = qz.quantized_nodes(proto, "norms")
    assert {by_name[n].op_type for n in norms} == {"Conv", "MatMul", "Gemm"}
    attention = qz.quantized_nodes(proto, "norms-attention")
    assert len(norms) - len(attention) == 2 * SPEC.depth  # Q K^T and attention x V per block stay float
    ends = qz.quantized_nodes(proto, "norms-attention-ends")
    assert ends == attention[1:-1] and by_name[attention[0]].op_type == "Conv"
    with pytest.raises(UsageError, match="keep-float"):
        qz.quantized_nodes(proto, "everything")


def test_each_keep_float_set_quantizes_fewer_tensors_than_the_one_before(tmp_path, fp32, inputs):
    counts = []
    for keep in qz.KEEP_FLOAT:
        path = tmp_path / f"{keep}.onnx"
        qz.make_int8_static(fp32, path, inputs["calibration"][:32], keep_float=keep)
        counts.append(sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node))
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts), counts


def test_dynamic_int8_is_an_option_for_onnxruntime_profiles(tmp_path, inputs):
    profile = apply_overrides(
        load_profile("x86-cpu"), ["runtime.precision=int8", "runtime.int8_method=dynamic"]
    )
    summary = export_for_profile(trained_model(), SPEC, profile, tmp_path, exporter="legacy", **inputs)
    int8 = summary["onnx"]["variants"][1]
    assert int8["method"] == "dynamic" and int8["file"] == "model.int8.onnx"
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}


def test_dynamic_int8_on_a_tensorrt_profile_is_an_invalid_profile():
    from wave_deploy.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="int8_method"):
        apply_overrides(load_profile("jetson"), ["runtime.int8_method=dynamic"])


def test_a_variant_that_fails_its_gate_is_rejected_and_recorded_without_raising(
    tmp_path, inputs, impossible_accuracy_gate
):
    impossible_accuracy_gate()
    profile = apply_overrides(load_profile("raspberry-pi-5"), ["runtime.precision=int8"])
    summary = export_for_profile(trained_model(), SPEC, profile, tmp_path, exporter="legacy", **inputs)
    onnx_section = summary["onnx"]
    assert onnx_section["chosen_precision"] == "int8" and onnx_section["chosen_passed"] is False
    for v in onnx_section["variants"]:
        name = {"fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}[v["precision"]]
        assert not v["passed"] and v["file"] is None and v["rejected_to"] == f"rejected/{name}"
        assert v["max_drop_points"] == -50.0 and "exceeds the allowed -50" in v["failure"]
        assert not (tmp_path / name).exists() and (tmp_path / "rejected" / name).is_file()
        assert v["failure"] in (tmp_path / "rejected" / f"{name}.why.txt").read_text()
    assert summary["onnxruntime"]["bundle"] is None and not (tmp_path / "bundle").exists()
    assert json.loads((tmp_path / "export.json").read_text()) == summary


def test_without_labels_the_gate_counts_changed_predictions(tmp_path):
    fp32_logits = np.eye(10, dtype=np.float32)[np.arange(200) % 10]
    broken = np.roll(fp32_logits, 1, axis=1)  # every prediction moves to the next class
    record = qz.judge_variant(
        "x", broken, fp32_logits, None, precision="int8", method="static-qdq", max_drop_points=1.0
    )
    assert record["top1"] is None and record["top1_agreement"] == 0.0 and not record["passed"]
    assert "changes the top-1 class of 100.00%" in record["failure"]
    same = qz.judge_variant(
        "x", fp32_logits, fp32_logits, None, precision="int8", method="m", max_drop_points=0
    )
    assert same["passed"] and same["top1_agreement"] == 1.0


def test_fp32_parity_failure_rejects_model_onnx_and_raises(tmp_path, monkeypatch):
    original = ox.check_parity

    def too_strict(path, model, batches, tol=None, **kw):
        return original(path, model, batches, ox.Tolerance(atol=-1.0), **kw)

    monkeypatch.setattr(ox, "check_parity", too_strict)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_for_profile(trained_model(), SPEC, load_profile("x86-cpu"), tmp_path, exporter="legacy")
    assert not (tmp_path / "model.onnx").exists() and (tmp_path / "rejected" / "model.onnx").is_file()
    assert "fp32 parity gate" in (tmp_path / "rejected" / "model.onnx.why.txt").read_text()


def test_make_variant_makes_each_target_variant_from_the_fp32_model(tmp_path, fp32):
    from wave_deploy.target import FP16, INT8_ORT_DYNAMIC, INT8_ORT_STATIC, INT8_TENSORRT, Variant

    ops = {}
    for variant in (FP16, INT8_ORT_STATIC, INT8_ORT_DYNAMIC, INT8_TENSORRT):
        path = tmp_path / f"{variant.key}.{variant.method}.onnx"
        qz.make_variant(variant, fp32, path)  # static Q/DQ without images: seeded random calibration
        ops[variant] = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QuantizeLinear" in ops[INT8_ORT_STATIC] and "QuantizeLinear" in ops[INT8_TENSORRT]
    assert "MatMulInteger" in ops[INT8_ORT_DYNAMIC] and "QuantizeLinear" not in ops[INT8_ORT_DYNAMIC]
    assert "QuantizeLinear" not in ops[FP16] and "MatMulInteger" not in ops[FP16]
    with pytest.raises(UsageError, match="cannot make an ONNX variant"):
        qz.make_variant(Variant("int8", "int8", "x.onnx", "qdq"), fp32, tmp_path / "x.onnx")
