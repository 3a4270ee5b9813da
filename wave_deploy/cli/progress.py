"""A rich progress bar behind the training loop's ``on_step`` callback.

The library never draws: ``wave_deploy.training.train`` calls ``on_step(StepInfo)`` every ``log_every``
steps on the main process, and CLI commands pass a ``TrainingProgress`` as that callback. Nothing here
imports torch.
"""

from __future__ import annotations

from typing import Any


class TrainingProgress:
    """Context manager and callback: ``with TrainingProgress("scalers") as bar: train(..., on_step=bar)``.

    Shows steps done / total, the latest train loss, validation accuracy, images/s, elapsed and remaining
    time. ``disable=True`` (e.g. for ``--quiet`` or ``--json``) draws nothing. Draws on stderr by default
    so that ``--json`` output on stdout stays clean. Nothing is drawn before the first step, so a command that
    fails before training prints only its one-line error.
    """

    def __init__(self, description: str = "training", *, console=None, disable: bool = False):
        from rich.console import Console

        self.description = description
        self.console = console or Console(stderr=True)
        self.disable = disable
        self._progress: Any = None  # a rich Progress once the first step arrives
        self._task: Any = None

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
        """The ``on_step`` callback: ``info`` is a ``wave_deploy.training.StepInfo``."""
        if self.disable:
            return
        if self._progress is None:
            self._start()
        stats = f"loss {info.loss:.4f}"
        if info.val_acc is not None:
            stats += f"  val acc {info.val_acc:.2%}"
        stats += f"  {info.images_per_s:,.0f} img/s"
        self._progress.update(self._task, completed=info.step, total=info.total_steps, stats=stats)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
