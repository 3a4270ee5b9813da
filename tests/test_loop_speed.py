"""benchmarks/loop_speed.py runs the real training loop under the configuration it names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cpu_eager_configuration_trains_through_the_loop_and_reports_what_ran():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loop_speed.py"), "--device", "cpu", "--shape", "1x32@28",
         "--batch", "16", "--batches", "4", "--steps", "4", "--every", "2", "--threads", "1", "--only", "1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    report = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    assert report["shape"] == "vit_d32_l1_h1_p7_28" and report["batch"] == 16
    ((name, result),) = report["results"].items()
    assert name == "fp32, eager" and result["ratio"] == 1.0
    assert result["placement"] == "host" and result["amp"] == "off" and result["compiled"] is False
    assert result["images_per_s"] > 0


def test_too_few_steps_for_two_report_windows_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loop_speed.py"), "--steps", "3", "--every", "2"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "at least two report windows" in proc.stderr
