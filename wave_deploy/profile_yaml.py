"""Reading profile YAML safely: a SafeLoader that refuses duplicate keys and over-long integers, with bounds on
the file's size, nesting and integer magnitude checked before the schema (``wave_deploy.profiles``) sees it.

Every problem raises ``InvalidInputError`` (exit 3) naming the file (or the ``--set`` setting) and the place.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from wave_deploy.errors import InvalidInputError, first_line


@functools.cache
def _yaml_loader():
    """A SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one) and integers with more digits
    than Python converts (a ValueError from deep inside PyYAML otherwise)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:  # unhashable key: SafeLoader reports it with its own message
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first at line {seen[key]})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            try:
                return super().construct_yaml_int(node)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits, 4300)
                digits = sum(c.isdigit() for c in str(node.value))
                limit = sys.get_int_max_str_digits()
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"an integer of {digits:,} digits (Python reads at most {limit:,})",
                    node.start_mark,
                ) from None

    UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", UniqueKeyLoader.construct_yaml_int)
    return UniqueKeyLoader


# Bounds checked before validation: the schema is 3 levels deep and a shipped profile is ~2 KB.
MAX_PROFILE_DEPTH = 8
MAX_PROFILE_BYTES = 1 << 20


def _nesting_depth(data: Any) -> int:
    """How many levels of mappings/lists ``data`` holds (iterative: any depth is measured without recursion)."""
    seen: dict[int, int] = {}  # id -> depth (YAML aliases share nodes)
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None or seen.get(id(node), 0) >= depth:
            continue
        seen[id(node)] = depth
        deepest = max(deepest, depth)
        if deepest > MAX_PROFILE_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


MAX_PROFILE_INT = 2**53  # integers beyond this lose precision as floats, and no profile quantity comes near


def _huge_integer(data: Any, prefix: str = "") -> str | None:
    """The dotted path of the first integer in ``data`` whose magnitude exceeds MAX_PROFILE_INT, or None
    (called after the depth check, so the recursion is shallow)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        where = f"{prefix}{key}"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_PROFILE_INT:
            return where
        found = _huge_integer(value, f"{where}.")
        if found is not None:
            return found
    return None


def read_profile_yaml(path: Path) -> dict[str, Any]:
    """The mapping a profile file holds, read with every bound above; InvalidInputError naming the file."""
    import yaml

    if path.is_dir():
        raise InvalidInputError(f"invalid profile {path}: is a directory, expected a YAML file")
    if not path.is_file():
        raise InvalidInputError(f"profile file {path} does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise InvalidInputError(
                f"invalid profile {path}: {size:,} bytes; a profile file is at most {MAX_PROFILE_BYTES:,} bytes"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"invalid profile {path}: cannot read it: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass: no arbitrary objects
    except RecursionError:
        raise InvalidInputError(
            f"invalid profile {path}: nested too deeply (a profile has at most {MAX_PROFILE_DEPTH} levels)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise InvalidInputError(f"invalid profile {path}: {kind}{where}: {problem}") from exc
    if data is None:
        raise InvalidInputError(f"invalid profile {path}: file is empty")
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"invalid profile {path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    depth = _nesting_depth(data)
    if depth > MAX_PROFILE_DEPTH:
        raise InvalidInputError(
            f"invalid profile {path}: nested {depth} levels deep (a profile has at most {MAX_PROFILE_DEPTH})"
        )
    huge = _huge_integer(data)
    if huge is not None:
        raise InvalidInputError(
            f"invalid profile {path}: field '{huge}': the integer is larger than {MAX_PROFILE_INT:,} "
            "(no device quantity in a profile comes near it)"
        )
    return data


def read_yaml_value(text: str, what: str) -> Any:
    """One ``--set`` value read as YAML, with the file's checks; ``what`` names it in the error."""
    import yaml

    try:
        value = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass
    except RecursionError:
        raise InvalidInputError(f"{what}: the value is nested too deeply") from None
    except yaml.constructor.ConstructorError as exc:  # e.g. an integer of more than 4300 digits
        raise InvalidInputError(f"{what}: {exc.problem or 'unreadable value'}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "unreadable"
        raise InvalidInputError(f"{what}: the value is not valid YAML ({problem})") from None
    if _huge_integer({"value": value}) is not None:
        raise InvalidInputError(
            f"{what}: the integer is larger than {MAX_PROFILE_INT:,} (no device quantity in a profile comes near it)"
        )
    return value
