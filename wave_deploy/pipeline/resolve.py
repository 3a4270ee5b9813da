"""What a build would do, resolved without doing it (``build --dry-run``): the profiles with their ``--set``
settings, where each writes, the bank and the data it reads, and every option with its value.

Everything here is checked as the build checks it (a bad profile, setting, bank or data path exits 2 or 3),
and nothing is trained, exported or written. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wave_deploy.data_shape import check_bank_channels, probe_data
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import check_writable_dir
from wave_deploy.options import BuildOptions
from wave_deploy.profiles import apply_overrides, load_profile
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank


def resolve_build(profiles: list[str], options: BuildOptions) -> dict[str, Any]:
    """The resolved build as one JSON-ready object (``build --dry-run``)."""

    check_writable_dir(options.out, "--out")
    loaded = [apply_overrides(load_profile(p), options.profile_overrides) for p in profiles]
    bank = Path(options.templates) if options.templates else default_bank_path()
    geometry = inspect_bank(bank).geometry  # header, limits and hashes checked; no torch
    img_size = geometry.target_img_size(options.img_size)
    if options.data is not None and not Path(options.data).is_dir():
        raise InvalidInputError(
            f"data path {options.data} is not a directory", hint="pass an ImageFolder tree"
        )
    shape = probe_data(options.data)  # a listing and image headers, as the build reads them first
    if options.init == "wave" and not (options.compare_init and options.templates is None):
        check_bank_channels(shape, geometry.in_chans, bank)  # the build's refusal (exit 3)
    return {
        "ok": True,
        "dry_run": True,
        "profiles": [
            {
                "name": p.name,
                "out_dir": str(Path(options.out) / p.name),
                "runtime": p.software.runtime,
                "precision": p.runtime.precision,
                "overrides": list(p.overrides),
            }
            for p in loaded
        ],
        "bank": {
            "path": str(bank),
            "img_size": geometry.img_size,
            "patch_size": geometry.patch_size,
            "in_chans": geometry.in_chans,
        },
        "img_size": img_size,
        "data": options.data or "builtin:mnist_5k",
        "task": {"in_chans": shape.in_chans, "num_classes": shape.num_classes},
        "options": options.resolved(),
    }
