"""The depth-1 models a calibration design is built from: all widths exported at once, as deployment exports.

Exporting costs seconds per call whatever the model's size (the dynamo exporter traces and optimizes; about
2 s for a depth-1 ViT on this project's machine, 6 s under load), so every width of a design is exported in
ONE call: a module that runs each width's randomly initialized timm VisionTransformer on the same input,
exported with the settings of ``exporters.onnx.export_onnx`` (exporter, opset, dynamic batch axis), then
split into one graph per width (the nodes and weights each output needs). Each graph is then made into the
deployed variant (``quantize.make_variant``: per width, since int8 keeps each model's first and last layer
in float). tests/test_calibration_design.py checks that the result has the structure of a fresh single
export.

``design_graphs`` keeps the results, without their weights, for the life of the process.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from wave_deploy.spec import ViTSpec
from wave_deploy.target import Variant

log = logging.getLogger(__name__)

WEIGHT_STD = 0.02  # timm's initializer scale: no denormals, nothing saturates


def _modules(specs: list[ViTSpec]):
    import torch
    from timm.models.vision_transformer import VisionTransformer

    class Widths(torch.nn.Module):
        """Every width's model on the same input: one export for all of them."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.models = torch.nn.ModuleList(VisionTransformer(**s.timm_kwargs()).eval() for s in specs)
            with torch.no_grad():  # distinct values: exporters share identical initializers (zeros, ones)
                for p in self.parameters():
                    p.normal_(0.0, WEIGHT_STD)

        def forward(self, x):
            return tuple(m(x) for m in self.models)

    return Widths().eval()


def _export_all(specs: list[ViTSpec], path: Path, *, exporter: str, opset: int, batch_max: int) -> list[str]:
    """Export every spec's model into one file; returns the output name of each."""
    import torch

    from wave_deploy.exporters.onnx import INPUT_NAME

    one = specs[0]
    x = torch.zeros(2, one.in_chans, one.img_size, one.img_size)
    outputs = [f"logits_{i}" for i in range(len(specs))]
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=max(2, batch_max))
                torch.onnx.export(
                    _modules(specs), (x,), str(path), dynamo=True, opset_version=opset, external_data=False,
                    input_names=[INPUT_NAME], output_names=outputs, dynamic_shapes={"x": {0: batch}},
                    verbose=False,
                )  # fmt: skip
            else:
                axes = {INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
                torch.onnx.export(
                    _modules(specs), (x,), str(path), dynamo=False, opset_version=opset,
                    do_constant_folding=True, input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes,
                )  # fmt: skip
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return outputs


def split(model, output: str):
    """The graph of one output of ``model``: the nodes, weights and inputs it needs, its output named as
    ``export_onnx`` names it."""
    import onnx

    from wave_deploy.exporters.onnx import OUTPUT_NAME

    g = model.graph
    producer = {out: node for node in g.node for out in node.output}
    needed, stack, keep = set(), [output], set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(node.input)
    rename = {output: OUTPUT_NAME}
    nodes = []
    for node in g.node:
        if id(node) in keep:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.output[:] = [rename.get(t, t) for t in node.output]
            copy.doc_string = ""
            del copy.metadata_props[:]  # exporter provenance (stack traces with this machine's paths)
            nodes.append(copy)
    out_info = next(o for o in g.output if o.name == output)
    new_out = onnx.ValueInfoProto()
    new_out.CopyFrom(out_info)
    new_out.name = OUTPUT_NAME
    graph = onnx.helper.make_graph(
        nodes,
        g.name,
        [i for i in g.input if i.name in needed],
        [new_out],
        initializer=[t for t in g.initializer if t.name in needed],
    )
    result = onnx.helper.make_model(
        graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    result.functions.extend(model.functions)
    return result


def block_models(
    specs: list[ViTSpec], variant: Variant, workdir: Path, *, exporter: str, opset: int, batch_max: int
) -> dict:
    """The depth-1 model of each spec's width (an onnx ModelProto), exported together and made into
    ``variant``."""
    import onnx

    from wave_deploy.exporters.quantize import make_variant

    ones = list(dict.fromkeys(s.replace(depth=1) for s in specs))
    path = workdir / "widths.onnx"
    outputs = _export_all(ones, path, exporter=exporter, opset=opset, batch_max=batch_max)
    combined = onnx.load(str(path))
    models = {}
    for spec, output in zip(ones, outputs):
        model = split(combined, output)
        if variant.precision != "fp32":
            fp32, out = workdir / f"{spec.name}.onnx", workdir / f"{spec.name}.{variant.key}.onnx"
            onnx.save(model, str(fp32))
            make_variant(variant, fp32, out)
            model = onnx.load(str(out))
        models[spec] = model
    log.info("exported %d width(s) for the calibration design (%s, %s)", len(ones), exporter, variant.key)
    return models
