"""The one strict JSON reader for every file the release gate reads (report.json, device_report.json,
bundle/plan.json, manifest.json).

Python's ``json`` module accepts what JSON does not: a duplicated key (the last one silently wins, so a file
can say two things and be read as either), the tokens ``NaN``, ``Infinity`` and ``-Infinity``, and numbers
such as ``1e999`` that overflow to infinity. Here each of these is refused with ``InvalidInputError``
(exit 3) naming the file and what was wrong. Booleans stay booleans: the pydantic models that validate the
parsed data run in strict mode, where ``true`` is not a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from wave_deploy.errors import InvalidInputError


class StrictJSONError(ValueError):
    """A value JSON does not allow (raised from the decoder's hooks)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicated key {key[:60]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"the number {text[:40]} is out of range (not finite)")
    return value


def parse(text: str) -> Any:
    """Parse ``text`` strictly; ValueError (a ``StrictJSONError`` for what JSON does not allow) on a duplicate
    key, NaN/Infinity, a number that is not finite, or anything that is not JSON."""
    return json.loads(
        text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite_float
    )


def loads(text: str, where: str) -> Any:
    """Parse ``text`` strictly; InvalidInputError naming ``where`` on a duplicate key, NaN/Infinity, a
    number that is not finite, or anything that is not JSON."""
    try:
        return parse(text)
    except StrictJSONError as exc:
        raise InvalidInputError(f"{where}: not strict JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer of > 4300 digits
        raise InvalidInputError(f"{where}: not valid JSON: {' '.join(str(exc).split())[:200]}") from None


def read(path: str | Path, what: str) -> Any:
    """The strictly parsed JSON file ``path`` (``what`` names it in errors); InvalidInputError (exit 3) if it
    is missing, unreadable or not strict JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no {what} there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: unreadable {what}: {' '.join(str(exc).split())}") from None
    return loads(text, f"{path}: {what}")
