"""wave_deploy.probe: the one module that asks the machine what it has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wave_deploy import probe
from wave_deploy.bench.runners import available_threads
from wave_deploy.bench.stats import cpu_description

PACKAGE = Path(probe.__file__).parent

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n"
ARM = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n"


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [
        (X86, "AMD EPYC 7B13"),
        (ARM, "Arm CPU implementer 0x41 part 0xd42"),
        ("Hardware\t: BCM2835\n", "BCM2835"),
    ],
)
def test_cpu_model_reads_x86_and_arm_cpuinfo(monkeypatch, cpuinfo, expected):
    monkeypatch.setattr(probe, "_read_text", lambda path: cpuinfo if path == "/proc/cpuinfo" else None)
    assert probe.cpu_model() == expected
    assert probe.cpu_description() == f"{expected} ({probe.usable_cores()} logical cores)"


def test_l4t_release_is_read_from_nv_tegra_release(monkeypatch):
    text = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n"
    monkeypatch.setattr(probe, "_read_text", lambda path: text if path == "/etc/nv_tegra_release" else None)
    assert probe.l4t_release() == "R36.4.0"
    monkeypatch.setattr(probe, "_read_text", lambda path: None)
    assert probe.l4t_release() is None and probe.board_model() is None


def test_the_runners_report_what_the_probe_finds():
    assert cpu_description() == probe.cpu_description()
    assert available_threads() == probe.usable_cores()


def test_no_other_module_probes_the_machine_itself():
    probes = re.compile(
        r"cuda\.is_available\(|get_available_providers\(|sched_getaffinity|/proc/cpuinfo|^\s*import tensorrt\b"
        r"|mem_get_info\(|platform\.(node|platform)\(",
        re.MULTILINE,
    )
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "probe.py" and probes.search(path.read_text())
    ]
    assert offenders == []
