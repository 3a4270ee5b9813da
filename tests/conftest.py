import os

# Two cores on CI: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

# Where the WAVE core tests (expansion, WaveViT, folding, training) run: "cpu" (CI) or "cuda"
# (scripts/gpu_check.sh on a GPU machine). Every other test runs on the CPU either way.
TEST_DEVICE_ENV = "WAVE_DEPLOY_TEST_DEVICE"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def device():
    """The torch.device named by WAVE_DEPLOY_TEST_DEVICE (default cpu).

    Asking for cuda where none is visible fails rather than skips: a GPU check that quietly ran nothing
    would prove nothing. On CUDA, TF32 is switched off and deterministic kernels are asked for (cuBLAS also
    needs CUBLAS_WORKSPACE_CONFIG, which scripts/gpu_check.sh sets), so the fp32 tolerances and the
    bit-identical resume test mean the same thing as on the CPU.
    """
    import torch

    name = os.environ.get(TEST_DEVICE_ENV, "cpu")
    if name not in ("cpu", "cuda"):
        pytest.fail(f"{TEST_DEVICE_ENV}={name!r}: use cpu or cuda")
    if name == "cuda":
        if not torch.cuda.is_available():
            pytest.fail(f"{TEST_DEVICE_ENV}=cuda but torch sees no CUDA GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(name)


@pytest.fixture
def impossible_accuracy_gate(monkeypatch):
    """Call it to make every fp16/int8 variant fail its accuracy gate from then on: the real gate
    (quantize.judge_variant) judges the real variant, asked for a gain of 50 points over ONNX fp32. A profile
    cannot ask that itself (runtime.max_accuracy_drop_points >= 0), so the tests of what follows a failed gate
    set it here."""

    def arm() -> None:
        from wave_deploy.exporters import quantize

        judge = quantize.judge_variant
        monkeypatch.setattr(
            quantize, "judge_variant", lambda *args, **kw: judge(*args, **{**kw, "max_drop_points": -50.0})
        )

    return arm
