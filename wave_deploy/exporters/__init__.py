"""Exporters (DESIGN section 6): ONNX with its fp32 parity gate (onnx.py), fp16 / int8 variants and their
accuracy gate (quantize.py), TensorRT plans and engines (tensorrt.py), the on-device bundle (bundle.py), and
the small interface and registry that join them (base.py).

Importing this package imports neither torch, onnx, onnxruntime nor tensorrt.
"""

from wave_deploy.exporters.base import REGISTRY, ExportContext, Exporter, export_for_profile, get_exporter

__all__ = ["REGISTRY", "ExportContext", "Exporter", "export_for_profile", "get_exporter"]
