"""Progress when stderr is not a terminal: plain lines every few seconds, none for a short run."""

import io
from types import SimpleNamespace

from rich.console import Console

from wave_deploy.cli.progress import TrainingProgress


def _step(step, total=10):
    return SimpleNamespace(step=step, total_steps=total, loss=0.5, val_acc=0.9, images_per_s=100.0)


def _run(every, steps=10):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with TrainingProgress("stage 2: init", console=console, plain_every_s=every) as bar:
        for s in range(1, steps + 1):
            bar(_step(s, steps))
    return out.getvalue().splitlines()


def test_a_log_gets_a_plain_line_per_interval_and_the_last_step():
    lines = _run(every=0.0)  # every call is due
    assert len(lines) == 10 and all(line.startswith("stage 2: init: step ") for line in lines)
    assert "step 10/10" in lines[-1] and "val acc 90.00%" in lines[-1] and "left" not in lines[-1]
    assert "left " in lines[0] and "\x1b" not in "".join(lines)  # no escape codes in a log


def test_a_short_run_in_a_log_prints_nothing():
    assert _run(every=3600.0) == []
