"""Rewrite a template bank's provenance without absolute paths; its tensors stay byte-for-byte the same.

Used once to fix the shipped bank (wave_deploy/assets/default_bank.safetensors), whose provenance recorded the
absolute path of the script that built it. Stage 1 now writes portable provenance itself
(wave_deploy.wave.bank_file.portable_provenance); this script applies the same rule to an existing bank:
the command's first word becomes ``wave-deploy`` and every absolute path becomes a path relative to the working
directory or a file name. It prints the sha256 of every tensor before and after, and refuses to write when any
differs.

    python scripts/rewrite_bank_provenance.py BANK [--out OUT]      (default: rewrite BANK in place)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np
from safetensors.numpy import save_file

from wave_deploy.wave.bank_file import METADATA_KEY, inspect_bank
from wave_deploy.wave.provenance import portable_provenance


def tensor_hashes(path) -> dict[str, str]:
    bank = inspect_bank(path)  # every tensor verified against the sha256 its metadata records
    return {name: hashlib.sha256(raw).hexdigest() for name, raw in sorted(bank.read_tensors().items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank")
    parser.add_argument("--out")
    args = parser.parse_args()
    out = args.out or args.bank
    bank = inspect_bank(args.bank)
    raw = bank.read_tensors()
    before = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(raw.items())}
    provenance = dict(bank.provenance)
    command = provenance.get("command")
    if isinstance(command, str) and command.split(" ")[0] and os.path.isabs(command.split(" ")[0]):
        provenance["command"] = " ".join(["wave-deploy", *command.split(" ")[1:]])
    meta = {
        "schema_version": 1,
        "geometry": bank.geometry.to_dict(),
        "aux_spec": None if bank.aux_spec is None else bank.aux_spec.to_dict(),
        "provenance": portable_provenance(provenance),
        "sha256": bank.sha256,
    }
    dtypes = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
    arrays = {
        name: np.frombuffer(data, dtype=dtypes[bank.entries[name].dtype]).reshape(bank.entries[name].shape)
        for name, data in raw.items()
    }
    tmp = f"{out}.rewrite.safetensors"
    save_file(arrays, tmp, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    if tensor_hashes(tmp) != before:
        os.remove(tmp)
        raise SystemExit("tensor bytes changed; nothing written")
    os.replace(tmp, out)
    for name, digest in before.items():
        print(f"{digest}  {name}")
    print(f"{len(before)} tensors unchanged; provenance rewritten -> {out}")


if __name__ == "__main__":
    main()
