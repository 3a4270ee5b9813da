"""A rich progress bar behind the training loop's ``on_step`` callback.

The library never draws: ``wave_deploy.training.loop.train`` calls ``on_step(StepInfo)`` every ``log_every``
steps on the main process, and CLI commands pass a ``TrainingProgress`` as that callback. Nothing here
imports torch.

When stderr is not a terminal (CI logs, redirected output) no bar is drawn: a plain line is written every
``plain_every_s`` seconds (default 5) instead, and one at the last step once any line was written, e.g.
``stage 2: init: step 40/100  loss 0.5123  val acc 91.20%  118 img/s  elapsed 0:00:21  left 0:00:31``.
"""

from __future__ import annotations

import time
from typing import Any


class TrainingProgress:
    """Context manager and callback: ``with TrainingProgress("scalers") as bar: train(..., on_step=bar)``.

    Shows steps done / total, the latest train loss, validation accuracy, images/s, elapsed and remaining
    time. ``disable=True`` (e.g. for ``--quiet`` or ``--json``) draws nothing. Draws on stderr by default
    so that ``--json`` output on stdout stays clean. Nothing is drawn before the first step, so a command that
    fails before training prints only its one-line error.
    """

    def __init__(
        self,
        description: str = "training",
        *,
        console=None,
        disable: bool = False,
        plain_every_s: float = 5.0,
    ):
        from rich.console import Console

        self.description = description
        self.console = console or Console(stderr=True)
        self.disable = disable
        self.plain_every_s = plain_every_s
        self._progress: Any = None  # rich.progress.Progress once the first step arrives
        self._task: Any = None
        self._started: float | None = None  # plain mode: when the first step arrived
        self._last_line: float | None = None  # plain mode: when the last line was written

    def __enter__(self):
        return self  # the bar starts at the first step: an error before any training prints no bar

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.disable,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=None, stats="")

    def __call__(self, info) -> None:
        """The ``on_step`` callback: ``info`` is a ``wave_deploy.training.loop.StepInfo``."""
        if self.disable:
            return
        stats = f"loss {info.loss:.4f}"
        if info.val_acc is not None:
            stats += f"  val acc {info.val_acc:.2%}"
        stats += f"  {info.images_per_s:,.0f} img/s"
        if not self.console.is_terminal:
            self._plain_line(info, stats)
            return
        if self._progress is None:
            self._start()
        self._progress.update(self._task, completed=info.step, total=info.total_steps, stats=stats)

    def _plain_line(self, info, stats: str) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = self._last_line = now
        last = info.total_steps is not None and info.step >= info.total_steps
        due = now - (self._last_line or now) >= self.plain_every_s
        if not due and not (last and self._last_line != self._started):
            return
        elapsed = now - self._started
        total = f"/{info.total_steps}" if info.total_steps else ""
        line = f"{self.description}: step {info.step}{total}  {stats}  elapsed {_clock(elapsed)}"
        if info.total_steps and info.step and not last:
            line += f"  left {_clock(elapsed * (info.total_steps - info.step) / info.step)}"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._last_line = now

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
