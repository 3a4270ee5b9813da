"""The values a template bank may hold, checked on a tensor's raw little-endian bytes (no torch, no copy):
finite (no NaN or Inf) and no larger in magnitude than ``MAX_ABS_VALUE``. Used by ``wave.bank_file``.
"""

from __future__ import annotations

# safetensors dtype -> (bytes per element, exponent mask of the raw little-endian integer, its numpy type)
FLOAT_DTYPES = {
    "F16": (2, 0x7C00, "<u2"),
    "BF16": (2, 0x7F80, "<u2"),
    "F32": (4, 0x7F800000, "<u4"),
    "F64": (8, 0x7FF0000000000000, "<u8"),
}
# The largest magnitude a bank value may have. Stage 1 trains every template and scaler with AdamW, weight
# decay 0.05, on parameters that start at most ~6 (unit-normal templates) in magnitude: an Adam step moves a
# value by at most 7.3 x lr (worst case for betas 0.9/0.999) while decay shrinks it by lr x 0.05 x |value|, so
# no value can grow past max(6, 7.3 / 0.05 = 146) for any lr <= 20 and any number of steps. The shipped bank's
# largest is 4.19. 1000 leaves a margin of ~7x over that bound, and is exact in F16, BF16, F32 and F64
# (docs/decisions.md, issue 19).
MAX_ABS_VALUE = 1000.0

__all__ = ["FLOAT_DTYPES", "MAX_ABS_VALUE", "value_problem"]


def value_problem(raw: bytes, dtype: str) -> str | None:
    """What is wrong with a tensor's values ("3 NaN/Inf value(s) of 40", "1 value(s) of 40 beyond +-1000 ..."),
    or None when every value is finite and within +-MAX_ABS_VALUE. ``dtype`` is a key of FLOAT_DTYPES."""
    import numpy as np

    _, mask, int_type = FLOAT_DTYPES[dtype]
    bits = np.frombuffer(raw, dtype=int_type)
    bad = int(np.count_nonzero((bits & np.array(mask, dtype=int_type)) == mask))
    if bad:
        return f"{bad} NaN/Inf value(s) of {bits.size}"
    huge = int(np.count_nonzero(_magnitude_bits(bits, dtype) > _limit_bits(dtype)))
    if huge:
        return (
            f"{huge} value(s) of {bits.size} beyond +-{MAX_ABS_VALUE:g} (largest {_largest(raw, dtype):.3g}), "
            "more than a distilled bank can hold"
        )
    return None


def _magnitude_bits(bits, dtype: str):
    """The raw integers with the sign bit cleared: for IEEE floats they order like the magnitudes."""
    import numpy as np

    int_type = FLOAT_DTYPES[dtype][2]
    sign = np.array(1 << (8 * FLOAT_DTYPES[dtype][0] - 1), dtype=int_type)
    return bits & ~sign


def _limit_bits(dtype: str) -> int:
    """MAX_ABS_VALUE's raw bit pattern in ``dtype`` (exact in every bank dtype)."""
    import numpy as np

    if dtype == "BF16":  # bfloat16 is the upper half of a float32
        return int(np.array(MAX_ABS_VALUE, dtype="<f4").view("<u4")) >> 16
    numpy_float = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]
    return int(np.array(MAX_ABS_VALUE, dtype=numpy_float).view(FLOAT_DTYPES[dtype][2]))


def _largest(raw: bytes, dtype: str) -> float:
    """The largest magnitude in a tensor's raw bytes (for the error message)."""
    import numpy as np

    if dtype == "BF16":
        values = (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4")
    else:
        values = np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])
    return float(np.abs(values.astype(np.float64)).max())
