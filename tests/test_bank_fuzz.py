"""Seeded fuzzing of the template bank loader: every mutant of a small valid bank loads or is refused with
InvalidInputError (exit 3, one line naming the file), within a time and memory limit (issue 13, deliverable 6).

Mutants: byte flips, truncations, header-length lies, dtype/shape/offset lies, header and metadata edits of
every field (wrong JSON types, huge and non-finite numbers, deep nesting, control characters, duplicated
keys), NaN/Inf and extreme finite values with consistent hashes, and random value swaps at random paths of the header JSON.
All run in this process through the real loader (``TemplateBank.load``) and the torch-free reader
(``inspect_bank``), which must agree, and through `templates info` (CliRunner); a sample also runs through
the real CLI in fresh processes under an address-space limit.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest
from _bank_files import join, meta_of, split, with_meta, with_values
from _banks import random_bank
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.bank_file import MAX_HEADER_BYTES, inspect_bank
from wave_deploy.wave.bank_values import MAX_ABS_VALUE
from wave_deploy.wave.model import WaveViT
from wave_deploy.wave.provenance import escape_control

SEED = 13
CASE_LIMIT_S = 10  # per mutant: a hang detector, far above the few milliseconds a load takes
CASE_PEAK_BYTES = 64 << 20  # per mutant: Python/numpy allocations while loading (the bank is ~10 KB)
CLI_SAMPLE = 16
HUGE_INT = "1" + "0" * 5000  # more digits than Python's json parses into an int
POOL = [0, -1, 1, 3, 10**7, 10**12, 2**64, 1.5, 1e308, "8", "", None, True, [], {}, [1, 2], {"a": 1}]
NONFINITE = ["NaN", "Infinity", "-Infinity"]  # JSON text Python's json parser accepts


def _base_bank() -> bytes:
    base = random_bank()
    aux = WaveViT(base, base.geometry.make_spec(2, 16), seed=1)
    bank = aux.export_bank({"data": {"class_names": [str(i) for i in range(10)]}, "note": "fuzz base"})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return bank.save(os.path.join(tmp, "b.safetensors")).read_bytes()


def _meta_edit(data: bytes, edit) -> bytes:
    header, area = split(data)
    meta = meta_of(header)
    edit(meta)
    return join(with_meta(header, meta), area)


def _meta_text(data: bytes, text: str) -> bytes:
    header, area = split(data)
    return join(with_meta(header, text), area)


def _set_path(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _paths(obj, prefix=()):
    """Every (key path) in a JSON tree."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def mutants(good: bytes) -> list[tuple[str, str, bytes]]:
    """(label, expectation 'ok' | 'bad' | 'any', bytes) for a seeded corpus of mutants of ``good``."""
    rng = random.Random(SEED)
    header, area = split(good)
    hlen = len(good) - len(area) - 8
    names = sorted(k for k in header if k != "__metadata__")
    out: list[tuple[str, str, bytes]] = [("unchanged", "ok", good)]

    # byte flips: in the data area every flip breaks a sha256; in the header it may land in free text
    for i in range(40):
        pos = rng.randrange(8, 8 + hlen) if i < 20 else rng.randrange(8 + hlen, len(good))
        flipped = bytearray(good)
        flipped[pos] ^= rng.randrange(1, 256)
        out.append((f"flip@{pos}", "any" if pos < 8 + hlen else "bad", bytes(flipped)))
    # truncation anywhere
    for cut in sorted(
        {0, 1, 7, 8, 9, 8 + hlen - 1, 8 + hlen, 8 + hlen + 1, len(good) - 1, *rng.sample(range(len(good)), 8)}
    ):
        out.append((f"truncate@{cut}", "bad", good[:cut]))
    out.append(("appended byte", "bad", good + b"\0"))
    # the header-length prefix lies
    for length in (0, 1, hlen - 1, hlen + 1, len(good), MAX_HEADER_BYTES + 1, 2**63, 2**64 - 1):
        out.append((f"header length {length}", "bad", length.to_bytes(8, "little") + good[8:]))

    # tensor entries that lie about dtype, shape or offsets
    entry_edits = (
        [("dtype", v) for v in ("I32", "U8", "BOOL", "F64", "F16", "BF16", "", 3, None, "F8_E4M3")]
        + [("shape", v) for v in ([], [0], [-1], [10**12], [2.5], "x", [1] * 9, [10**30, 0], None)]
        + [
            ("data_offsets", v)
            for v in ([0, 0], [5, 3], [-1, 4], [0, 10**12], [1, 2], "ab", [0], None, [0.0, 4.0])
        ]
    )
    for field, value in entry_edits:
        name = rng.choice(names)
        edited = json.loads(json.dumps(header))
        edited[name][field] = value
        out.append((f"{name}.{field}={value!r}", "bad", join(edited, area)))
    for label, change in [
        ("shape off by one", lambda e: e.update(shape=[*e["shape"][:-1], e["shape"][-1] + 1])),
        ("shape transposed", lambda e: e.update(shape=e["shape"][::-1] + [1])),
        ("offsets shifted", lambda e: e.update(data_offsets=[o + 4 for o in e["data_offsets"]])),
        ("entry without dtype", lambda e: e.pop("dtype")),
        ("entry with an extra key", lambda e: e.update(extra=1)),
    ]:
        edited = json.loads(json.dumps(header))
        change(edited[rng.choice(names)])
        out.append((label, "bad", join(edited, area)))
    for label, edit in [
        ("entry is a list", lambda h: h.update({names[0]: [1, 2]})),
        ("tensor removed", lambda h: h.pop(names[-1])),
        ("unknown tensor", lambda h: h.update(evil={"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})),
        ("__metadata__ missing", lambda h: h.pop("__metadata__")),
        ("__metadata__ a list", lambda h: h.update(__metadata__=[1])),
        ("__metadata__ value not a string", lambda h: h.update(__metadata__={"wave_deploy.bank": {"a": 1}})),
        ("header is a list", None),
    ]:
        edited = json.loads(json.dumps(header))
        if edit is None:
            out.append((label, "bad", join("[" + json.dumps(edited) + "]", area)))
            continue
        edit(edited)
        out.append((label, "bad", join(edited, area)))
    text = json.dumps(header)
    for i in range(10):  # textual damage to the header JSON
        pos = rng.randrange(len(text))
        damaged = text[:pos] + rng.choice(['"', "{", "]", ",", "\\", "\x00", "é"]) + text[pos + 1 :]
        out.append((f"header text damaged@{pos}", "any", join(damaged, area)))
    out.append(("header padded to over the limit", "bad", join(text + " " * MAX_HEADER_BYTES, area)))

    # the bank metadata: every field with values of the wrong type, size or sign
    meta = meta_of(header)
    for field in meta["geometry"]:
        for value in rng.sample(POOL, 3):
            out.append(
                (
                    f"geometry.{field}={value!r}",
                    "any",
                    _meta_edit(good, lambda m, f=field, v=value: m["geometry"].__setitem__(f, v)),
                )
            )
        raw = json.dumps(meta).replace(
            f'"{field}": {json.dumps(meta["geometry"][field])}', f'"{field}": {HUGE_INT}', 1
        )
        out.append((f"geometry.{field}=10^5000", "bad", _meta_text(good, raw)))
    for token in NONFINITE:
        raw = json.dumps(meta).replace('"mlp_ratio": 4.0', f'"mlp_ratio": {token}')
        out.append((f"mlp_ratio={token}", "bad", _meta_text(good, raw)))
    for field, value in [
        ("max_embed_dim", 10**12),
        ("max_depth", 10**7),
        ("max_depth", 10**12),
        ("img_size", 10**12),
        ("w", 2**40),
        ("num_classes", 10**9),
    ]:
        out.append(
            (
                f"huge {field}",
                "bad",
                _meta_edit(good, lambda m, f=field, v=value: m["geometry"].__setitem__(f, v)),
            )
        )
    for label, edit, expect in [
        ("geometry.templates a list", lambda m: m["geometry"].__setitem__("templates", [3] * 20), "bad"),
        (
            "a kind's template count 0",
            lambda m: m["geometry"]["templates"].__setitem__("norm.bias", 0),
            "bad",
        ),
        (
            "a kind's template count 10^9",
            lambda m: m["geometry"]["templates"].__setitem__("norm.bias", 10**9),
            "bad",
        ),
        ("unknown kind in templates", lambda m: m["geometry"]["templates"].__setitem__("evil", 1), "bad"),
        ("kind missing in templates", lambda m: m["geometry"]["templates"].pop("pos_embed"), "bad"),
        ("geometry missing", lambda m: m.pop("geometry"), "bad"),
        ("geometry a string", lambda m: m.__setitem__("geometry", "x"), "bad"),
        ("aux_spec removed", lambda m: m.__setitem__("aux_spec", None), "bad"),
        ("aux_spec a list", lambda m: m.__setitem__("aux_spec", [2, 16]), "bad"),
        ("aux_spec deeper than max_depth", lambda m: m["aux_spec"].__setitem__("depth", 13), "bad"),
        ("schema_version 2", lambda m: m.__setitem__("schema_version", 2), "bad"),
        ("schema_version a string", lambda m: m.__setitem__("schema_version", "1"), "bad"),
        ("schema_version missing", lambda m: m.pop("schema_version"), "bad"),
        ("schema_version 1.0", lambda m: m.__setitem__("schema_version", 1.0), "bad"),
        ("schema_version true", lambda m: m.__setitem__("schema_version", True), "bad"),
        ("sha256 a list", lambda m: m.__setitem__("sha256", []), "bad"),
        ("sha256 entry missing", lambda m: m["sha256"].pop(names[0]), "bad"),
        ("sha256 entry not hex", lambda m: m["sha256"].__setitem__(names[0], "zz" * 32), "bad"),
        (
            "sha256 entry uppercase",
            lambda m: m["sha256"].__setitem__(names[0], m["sha256"][names[0]].upper()),
            "bad",
        ),
        ("sha256 entry an int", lambda m: m["sha256"].__setitem__(names[0], 5), "bad"),
        ("provenance a list", lambda m: m.__setitem__("provenance", ["a"]), "bad"),
        ("provenance a string", lambda m: m.__setitem__("provenance", "a"), "bad"),
        ("provenance.data a list", lambda m: m["provenance"].__setitem__("data", [1]), "bad"),
        (
            "provenance class_names a dict",
            lambda m: m["provenance"]["data"].__setitem__("class_names", {}),
            "bad",
        ),
        ("provenance null", lambda m: m.__setitem__("provenance", None), "ok"),
        (
            "provenance with terminal escapes",
            lambda m: m["provenance"].__setitem__("note", "\x1b]0;pwned\x07\x1b[2J\u202e"),
            "ok",
        ),
        (
            "provenance with an escape in a key",
            lambda m: m["provenance"].__setitem__("k\x1b[31m", {"x\ny": [None, True]}),
            "ok",
        ),
        ("provenance 300 KB of text", lambda m: m["provenance"].__setitem__("note", "ab" * 150_000), "ok"),
        (
            "provenance nested 30 deep",
            lambda m: m["provenance"].__setitem__("n", json.loads("[" * 30 + "]" * 30)),
            "ok",
        ),
        ("provenance non-finite number", lambda m: m["provenance"].__setitem__("x", float("nan")), "bad"),
    ]:
        out.append((label, expect, _meta_edit(good, edit)))
    base_text = json.dumps(meta)
    for depth in (33, 1000, 100_000):
        nested = base_text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
        out.append((f"metadata nested {depth} deep", "bad", _meta_text(good, nested)))
    for label, raw in [
        ("metadata not JSON", "{not json"),
        ("metadata a JSON list", "[]"),
        ("metadata empty", ""),
        ("metadata 10^5000", HUGE_INT),
        ("metadata with a duplicate key", base_text[:-1] + ', "schema_version": 7}'),
        ("metadata with a duplicate equal key", base_text[:-1] + ', "schema_version": 1}'),
        (
            "metadata with a duplicate nested key",
            base_text.replace('"geometry": {', '"geometry": {"w": 1, ', 1),
        ),
        ("metadata over the size limit", base_text[:-1] + ', "pad": "' + "x" * MAX_HEADER_BYTES + '"}'),
    ]:
        out.append((label, "bad", _meta_text(good, raw)))

    # values: non-finite ones and ones beyond MAX_ABS_VALUE are refused even with consistent hashes
    for i in range(12):
        name = rng.choice(names)
        value = [np.nan, np.inf, -np.inf][i % 3]
        whole = i % 4 == 0

        def poke(v, value=value, whole=whole):
            if whole:
                v.fill(value)
            else:
                v[rng.randrange(v.size)] = value

        out.append((f"{name} {'all' if whole else 'one'} {value}", "bad", with_values(good, name, poke)))
    for value, expect in [
        (np.finfo(np.float32).max, "bad"),
        (-np.finfo(np.float32).max, "bad"),
        (np.nextafter(np.float32(MAX_ABS_VALUE), np.float32(np.inf)), "bad"),
        (-MAX_ABS_VALUE, "ok"),
        (MAX_ABS_VALUE, "ok"),
        (np.finfo(np.float32).tiny / 4, "ok"),
        (-0.0, "ok"),
    ]:
        out.append(
            (
                f"finite extreme {value}",
                expect,
                with_values(good, rng.choice(names), lambda v, x=value: v.fill(x)),
            )
        )
    # a NaN hidden in a float64 tensor (the loader reads F64 too)
    header64, area64 = split(good)
    name = names[0]
    start, end = header64[name]["data_offsets"]
    as64 = np.frombuffer(area64[start:end], dtype="<f4").astype("<f8")
    as64[0] = np.nan
    raw64 = as64.tobytes()
    shift = len(raw64) - (end - start)
    for other in names:
        s, e = header64[other]["data_offsets"]
        if s >= end:
            header64[other]["data_offsets"] = [s + shift, e + shift]
    header64[name].update(dtype="F64", data_offsets=[start, start + len(raw64)])
    meta64 = meta_of(header64)
    import hashlib

    meta64["sha256"][name] = hashlib.sha256(raw64).hexdigest()
    out.append(
        (
            "F64 tensor with a NaN",
            "bad",
            join(with_meta(header64, meta64), area64[:start] + raw64 + area64[end:]),
        )
    )
    as64[0] = 0.5
    meta64["sha256"][name] = hashlib.sha256(as64.tobytes()).hexdigest()
    out.append(
        (
            "F64 tensor, finite",
            "ok",
            join(with_meta(header64, meta64), area64[:start] + as64.tobytes() + area64[end:]),
        )
    )

    # random value swaps anywhere in the header and the bank metadata
    tree = {"header": json.loads(json.dumps(header)), "meta": meta_of(header)}
    all_paths = [p for p in _paths(tree) if len(p) > 1]
    for _ in range(60):
        mutated = json.loads(json.dumps(tree))
        path = rng.choice(all_paths)
        _set_path(mutated, path, rng.choice(POOL))
        h = with_meta(mutated["header"], mutated["meta"]) if path[0] == "meta" else mutated["header"]
        out.append(("swap " + "/".join(map(str, path)), "any", join(h, area)))
    return out


@contextmanager
def _time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _outcome(load, path) -> str:
    try:
        load(path)
    except InvalidInputError as exc:
        assert exc.exit_code == EXIT_INVALID_INPUT
        assert str(path) in exc.message or escape_control(path) in exc.message, exc.message
        assert "\n" not in exc.one_line()
        return "bad"
    return "ok"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    cases = []
    for i, (label, expect, data) in enumerate(mutants(_base_bank())):
        path = directory / f"m{i:03d}.safetensors"
        path.write_bytes(data)
        cases.append((label, expect, path))
    return cases


def test_corpus_is_large_and_covers_every_family(corpus):
    assert len(corpus) >= 200
    labels = " ".join(label for label, _, _ in corpus)
    for family in (
        "flip@",
        "truncate@",
        "header length",
        ".dtype=",
        ".shape=",
        ".data_offsets=",
        "nested",
        "huge max_embed_dim",
        "nan",
        "inf",
        "swap",
        "a list",
    ):
        assert family in labels, family


def test_every_mutant_loads_or_is_refused_with_exit_3_within_limits(corpus):
    """The real loader and the torch-free reader: same verdict, one-line InvalidInputError, bounded."""
    tracemalloc.start()
    outcomes = {}
    try:
        for label, expect, path in corpus:
            verdicts = []
            for load in (TemplateBank.load, inspect_bank):
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                with _time_limit(CASE_LIMIT_S):
                    verdicts.append(_outcome(load, path))
                peak = tracemalloc.get_traced_memory()[1] - base
                assert peak < CASE_PEAK_BYTES, f"{label}: {load.__qualname__} peaked at {peak} bytes"
            assert verdicts[0] == verdicts[1], (
                f"{label}: TemplateBank.load {verdicts[0]}, inspect_bank {verdicts[1]}"
            )
            assert expect in ("any", verdicts[0]), f"{label}: expected {expect}, got {verdicts[0]}"
            outcomes[label] = verdicts[0]
    finally:
        tracemalloc.stop()
    refused = sum(v == "bad" for v in outcomes.values())
    assert 150 < refused < len(outcomes)  # most mutants are refused; the valid ones still load


def test_templates_info_on_every_mutant_exits_0_or_3_with_one_error_line(corpus):
    runner = CliRunner()
    for label, expect, path in corpus:
        result = runner.invoke(cli, ["templates", "info", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (label, result.exception)
        assert result.exit_code in (0, EXIT_INVALID_INPUT), (label, result.output)
        if result.exit_code:
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0], (
                label,
                lines,
            )
            assert result.stdout == ""
        else:
            assert expect != "bad" and "\x1b" not in result.stdout and "provenance:" in result.stdout, label


def test_a_sample_of_mutants_through_the_real_cli_under_memory_and_time_limits(corpus):
    rng = random.Random(SEED)
    sample = [c for c in corpus if c[0].startswith(("huge", "metadata nested 100000", "provenance with"))]
    sample += rng.sample(corpus, CLI_SAMPLE - len(sample))

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB of address space

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for label, expect, path in sample:
        args = [sys.executable, "-m", "wave_deploy.cli.main", "templates", "info", str(path), "--json"]
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=CASE_LIMIT_S * 3,
            preexec_fn=limit,
            env=env,
            check=False,
        )
        assert result.returncode in (0, EXIT_INVALID_INPUT), (label, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, label
        if result.returncode:
            assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), label
        else:
            assert expect != "bad" and json.loads(result.stdout)["kinds"], label
