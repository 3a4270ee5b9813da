"""The calibration design as ONNX graphs without their weights: what a bundle ships and what `calibrate` times.

Per design width, one depth-1 timm VisionTransformer with random weights is exported as deployment
exports it and made into the deployed variant (``design_export.block_models``: fp16, int8 as the target
quantizes it; all widths in one export call). Its weights become ONNX external data described by fill rules (``externalize``), and its one
block is replicated to every design depth (``replicate``): copies of the block's nodes and weights, chained
on the residual stream, exactly the graph a fresh export of that depth gives (same ops in the same order,
same weight shapes; tests/test_calibration_design.py compares them). Small constants (shape tensors,
per-tensor quantization scales) stay inline and are shared, as the exporters share them.

``write_design`` packs the graphs and an index (geometry, variant, design points, timing settings, per graph
the byte range, element type and fill rule of every external tensor) into ``calibration.zip``; on the device
the kit's ``kit_design.Design.materialize`` writes each data file from seeded random values, and so does
``calibrate`` on this machine (the same module), so both time the same models.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from wave_deploy.calibration.design_export import WEIGHT_STD, block_models
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import write_bytes
from wave_deploy.spec import ViTSpec, flops, model_ops
from wave_deploy.target import FP32, Variant

log = logging.getLogger(__name__)

EXTERNAL_MIN_ELEMENTS = 16  # smaller initializers stay inline (scalars, shape tensors, per-tensor scales)
ALIGN = 64  # byte alignment of each tensor in a data file
CONST_SCALE = 0.01  # per-channel quantization scales (timing does not depend on the value)
# ONNX element types that become external data, by name (kit_design.DTYPES)
_EXTERNAL_TYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32"}
_INT_RANGES = {"int8": (-127, 127), "uint8": (0, 255), "int32": (-1024, 1024)}
_QDQ = ("QuantizeLinear", "DequantizeLinear")
MAX_CACHED = 512  # depth-1 graphs kept per process: tens of KB each, their weights are not kept
_BLOCKS: dict[tuple, tuple[bytes, dict]] = {}  # (depth-1 spec, variant, exporter, opset, batch) -> graph
_INTEGER_OPS = ("MatMulInteger", "ConvInteger")  # inputs 2, 3: zero points


@dataclass(frozen=True)
class DesignGraph:
    """One design model: its graph (external weights not included) and the description of its data file."""

    spec: ViTSpec
    graph: bytes
    tensors: list  # [offset, length, dtype, fill] per external tensor, ascending
    data_bytes: int


def _fill(dtype: str, uses: list[tuple[str, int]]) -> list:
    for op, index in uses:
        if op in _QDQ and index == 1:
            return ["const", CONST_SCALE]
        if (op in _QDQ and index == 2) or (op in _INTEGER_OPS and index in (2, 3)):
            return ["const", 0]
    if dtype in _INT_RANGES:
        return ["int", *_INT_RANGES[dtype]]
    return ["normal", WEIGHT_STD]


def externalize(model) -> dict[str, list]:
    """Turn ``model``'s weights (initializers of at least EXTERNAL_MIN_ELEMENTS of a float or integer weight
    type) into external-data references without data; returns {name: [dtype, fill rule]}."""
    from onnx import TensorProto

    uses: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, index))
    found = {}
    for tensor in model.graph.initializer:
        dtype = _EXTERNAL_TYPES.get(tensor.data_type)
        if dtype is None or math.prod(tensor.dims) < EXTERNAL_MIN_ELEMENTS:
            continue
        found[tensor.name] = [dtype, _fill(dtype, uses.get(tensor.name, []))]
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(field)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.EXTERNAL
    return found


def _block(graph) -> tuple[list[int], str, str]:
    """Indices of the one block's nodes of a depth-1 graph, its residual-stream input and output."""
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    if len(norms) != 3:
        raise InvalidInputError(f"expected a depth-1 ViT graph with 3 LayerNorms, found {len(norms)}")
    stream_in, stream_out = norms[0].input[0], norms[-1].input[0]
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}

    def ancestors(tensor: str) -> set[int]:
        seen: set[int] = set()
        stack = [tensor]
        while stack:
            i = producer.get(stack.pop())
            if i is not None and i not in seen:
                seen.add(i)
                stack.extend(graph.node[i].input)
        return seen

    return sorted(ancestors(stream_out) - ancestors(stream_in)), stream_in, stream_out


def replicate(model, depth: int, external: dict[str, list]):
    """A copy of the depth-1 ``model`` with its block repeated ``depth`` times; returns (model, external) where
    ``external`` also names the copies' weights. Weights used only inside the block get a copy per block;
    everything else (shape constants, inline scalars) stays shared."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    external = dict(external)
    if depth == 1:
        return out, external
    g = out.graph
    block, stream_in, stream_out = _block(g)
    inside = set(block)
    nodes = [g.node[i] for i in block]
    produced = {t for n in nodes for t in n.output}
    users: dict[str, set[int]] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            users.setdefault(name, set()).add(i)
    own = [t for t in g.initializer if t.name in external and users.get(t.name, set()) <= inside]
    copies, weights, previous = [], [], stream_out
    for k in range(1, depth):
        names = {t: f"{t}.b{k}" for t in produced | {w.name for w in own}}
        names[stream_in] = previous
        for node in nodes:
            c = onnx.NodeProto()
            c.CopyFrom(node)
            c.input[:] = [names.get(t, t) for t in node.input]
            c.output[:] = [names[t] for t in node.output]
            c.name = f"{node.name}.b{k}" if node.name else ""
            copies.append(c)
        for w in own:
            t = onnx.TensorProto()
            t.CopyFrom(w)
            t.name = names[w.name]
            weights.append(t)
            external[t.name] = external[w.name]
        previous = names[stream_out]
    for i, node in enumerate(g.node):
        if i not in inside:
            node.input[:] = [previous if t == stream_out else t for t in node.input]
    after = max(block) + 1
    rebuilt = [*g.node[:after], *copies, *g.node[after:]]
    del g.node[:]
    g.node.extend(rebuilt)
    g.initializer.extend(weights)
    del g.value_info[:]
    return out, external


def finalize(model, external: dict[str, list], data_name: str) -> tuple[bytes, list, int]:
    """Give every external tensor its place in the data file ``data_name``: (graph bytes, tensors, size)."""
    import numpy as np

    offset, tensors = 0, []
    for tensor in model.graph.initializer:
        if tensor.name not in external:
            continue
        dtype, fill = external[tensor.name]
        length = math.prod(tensor.dims) * np.dtype(dtype).itemsize
        offset = -(-offset // ALIGN) * ALIGN
        del tensor.external_data[:]
        for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensors.append([offset, length, dtype, fill])
        offset += length
    return model.SerializeToString(), tensors, offset


def structure(model, min_elements: int = EXTERNAL_MIN_ELEMENTS) -> list:
    """The graph's wiring, independent of node order and names: per node its op type and, per input, the op
    type of its producer (or the element type and shape of a weight, "const" for a small initializer,
    "input" for a graph input); sorted. Equal structures run the same kernels on the same shapes (tests
    compare a replicated graph with a fresh export of the same depth)."""
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    weights = {t.name: t for t in model.graph.initializer}

    def source(name: str):
        if name in producer:
            return producer[name]
        t = weights.get(name)
        if t is None:
            return "input" if name else ""
        return (t.data_type, tuple(t.dims)) if math.prod(t.dims) >= min_elements else ("const", t.data_type)

    return sorted((n.op_type, tuple(str(source(i)) for i in n.input)) for n in model.graph.node)


def design_graphs(
    specs: list[ViTSpec],
    variant: Variant = FP32,
    *,
    workdir: Path,
    exporter: str = "dynamo",
    opset: int = 18,
    batch_max: int = 2,
    on_width=None,
) -> dict[ViTSpec, DesignGraph]:
    """Every spec's graph: its width's depth-1 model (``design_export.block_models``: one export for all
    widths) with the block replicated to its depth; ``on_width(done, total)`` once all are made. The depth-1
    models, without their weights, are kept for the life of the process (``_BLOCKS``, keyed by everything
    that decides them): a second design of the same geometry in one process, as in a test session, exports
    nothing."""
    import onnx

    by_width: dict[ViTSpec, list[ViTSpec]] = {}
    for spec in specs:
        by_width.setdefault(spec.replace(depth=1), []).append(spec)
    keys = {one: (one, variant, exporter, opset, max(2, batch_max)) for one in by_width}
    missing = [one for one in by_width if keys[one] not in _BLOCKS]
    if missing:
        made = block_models(missing, variant, workdir, exporter=exporter, opset=opset, batch_max=batch_max)
        for one, model in made.items():
            external = externalize(model)
            if len(_BLOCKS) >= MAX_CACHED:
                _BLOCKS.pop(next(iter(_BLOCKS)))
            _BLOCKS[keys[one]] = (model.SerializeToString(), external)
    out: dict[ViTSpec, DesignGraph] = {}
    for one, group in by_width.items():
        data, external = _BLOCKS[keys[one]]
        base = onnx.load_from_string(data)
        for spec in sorted(set(group), key=lambda s: s.depth):
            model, names = replicate(base, spec.depth, external)
            graph, tensors, size = finalize(model, names, f"{spec.name}.data")
            out[spec] = DesignGraph(spec, graph, tensors, size)
    if on_width is not None:
        on_width(len(by_width), len(by_width))
    return out


def probe_graph(m: int = 256, k: int = 512, n: int = 512) -> bytes:
    """A one-MatMul ONNX graph (both operands are inputs: no weights) that measures a runtime's GEMM speed
    for the up-front time estimate."""
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "probe", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def model_entry(graph: DesignGraph, batches: list[int], seed: int, memory_mib: float) -> dict:
    """index.json's record of one design model."""
    spec = graph.spec
    name = spec.name
    return {
        "name": name,
        "depth": spec.depth,
        "embed_dim": spec.embed_dim,
        "num_heads": spec.num_heads,
        "graph": f"{name}.onnx",
        "data": f"{name}.data",
        "data_bytes": graph.data_bytes,
        "seed": seed,
        "tensors": graph.tensors,
        "batches": sorted(batches),
        "gflop": {str(b): flops(spec, b) / 1e9 for b in batches},
        "kernels": sum(op.count for op in model_ops(spec, 1)),
        "memory_mib": round(memory_mib, 1),  # at its largest batch (calibration_cost.point_memory_mib)
    }


def write_design(
    path: Path, graphs: dict[ViTSpec, DesignGraph], index: dict, batches: dict, memory: dict
) -> Path:
    """calibration.zip: index.json (``index`` plus a record per model) and every graph, deflated, with fixed
    dates: the same design gives the same bytes."""

    models = [model_entry(g, batches[s], seed, memory[s]) for seed, (s, g) in enumerate(graphs.items())]
    entries = [("index.json", json.dumps({**index, "models": models}, indent=1, sort_keys=True).encode())]
    entries += [(m["graph"], graphs[s].graph) for m, s in zip(models, graphs)]
    entries += [("probe.onnx", probe_graph())]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return write_bytes(path, buffer.getvalue())
