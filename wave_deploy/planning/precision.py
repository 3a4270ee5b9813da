"""The precision policy: at which element type a profile's deployed model holds its weights and activations.

The latency model, the memory model and calibration all ask here, so the three agree on what a profile's
``runtime.precision`` means for each tensor.
"""

from __future__ import annotations

from wave_deploy.profiles import DeviceProfile


def weight_precision(profile: DeviceProfile) -> str:
    """Precision the weights are stored at on the device: the profile's runtime precision."""
    return profile.runtime.precision


def activation_precision(profile: DeviceProfile) -> str:
    """Element type of activations: fp16 for fp16 and int8 TensorRT engines (int8 engines keep many tensors
    in fp16, so fp16 is the conservative choice); ONNX Runtime's int8 is dynamic quantization, whose
    activations stay fp32 between the quantized MatMuls."""
    precision = profile.runtime.precision
    if precision == "fp16":
        return "fp16"
    if precision == "int8" and profile.software.runtime == "tensorrt":
        return "fp16"
    return "fp32"
