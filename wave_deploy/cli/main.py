"""The ``wave-deploy`` command: a click group whose subcommands live in their own modules, loaded lazily.

This module is the only place where exceptions become exit codes (DESIGN section 7). Nothing here imports
torch: ``wave-deploy --help`` and ``wave-deploy profiles list`` stay fast.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from wave_deploy.cli import output
from wave_deploy.errors import EXIT_INTERNAL, EXIT_INVALID_INPUT, WaveDeployError
from wave_deploy.version import __version__

EXIT_CODES_HELP = """\b
Exit codes:
  0 ok                        1 internal error (a bug)
  2 usage error               3 invalid config/profile/bank/data file
  4 missing dependency/hw     5 no model fits the budget
  6 a stage failed            7 a parity or accuracy gate failed
  8 the built model breaks a budget (report still written)
  9 a budget judged on weaker evidence than required
    (--require-evidence, budgets.require_evidence)"""

# command name -> "module:attribute"; modules are imported only when the command runs or asks for --help.
COMMANDS = {
    "bench": "wave_deploy.cli.bench_cmd:bench",
    "build": "wave_deploy.cli.build_cmd:build",
    "calibrate": "wave_deploy.cli.calibrate_cmd:calibrate",
    "doctor": "wave_deploy.cli.doctor:doctor",
    "export": "wave_deploy.cli.export_cmd:export",
    "init": "wave_deploy.cli.init_cmd:init",
    "plan": "wave_deploy.cli.plan_cmd:plan",
    "profiles": "wave_deploy.cli.profiles_cmd:profiles",
    "report": "wave_deploy.cli.report_cmd:report",
    "templates": "wave_deploy.cli.templates_cmd:templates",
}


_NO_ARGS_IS_HELP = getattr(
    click.exceptions, "NoArgsIsHelpError", ()
)  # click >= 8.2: a group without a command


class LazyGroup(click.Group):
    """Loads subcommands lazily, maps errors to exit codes, and keeps the --json promise on every exit:
    a command run with --json prints exactly one JSON object on stdout, an error object when it fails
    (``{"ok": false, "exit_code", "error": {"class", "message"}, ...details}``)."""

    json_mode = False

    def main(self, args=None, *more, **kwargs):
        argv = list(sys.argv[1:] if args is None else args)
        self.json_mode = "--json" in argv
        output.reset_json()
        return super().main(argv, *more, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:  # commands attached with add_command (plugins, tests)
            return super().get_command(ctx, name)
        return _load(name)

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            broken = output.stdout_error()
            if (
                broken is not None
            ):  # the command worked but its result is lost: an output that cannot be written
                message = f"cannot write the result to stdout: {broken.strerror or broken}"
                click.echo(f"error: {message} (nothing more was written there)", err=True)
                ctx.exit(EXIT_INVALID_INPUT)
            return result
        except WaveDeployError as exc:
            debug = bool(ctx.obj and ctx.obj.get("debug"))
            if debug:
                logging.getLogger("wave_deploy").exception("error")
            self._json_error(exc.exit_code, type(exc).__name__, exc.one_line(), exc.details)
            click.echo(f"error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)
        except click.exceptions.Exit:
            raise
        except MemoryError:  # e.g. sizes or batches beyond this machine: an input problem, not a bug
            message = (
                "ran out of memory: the inputs ask for more than this machine has (smaller sizes or batches)"
            )
            self._json_error(EXIT_INVALID_INPUT, "MemoryError", message, {})
            click.echo(f"error: {message}", err=True)
            ctx.exit(EXIT_INVALID_INPUT)
        except (
            click.ClickException
        ) as exc:  # click's usage errors (a bad option value, a missing option): exit 2
            self._usage_error(exc)
            raise
        except Exception as exc:  # a bug: the traceback follows (main), exit 1
            self._json_error(EXIT_INTERNAL, type(exc).__name__, " ".join(str(exc).split()), {})
            raise
        finally:
            leave_process_group()

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # the group's own: an unknown option or command
            self._usage_error(exc)
            _refused_subcommand(list(args), exc)
            raise

    def _usage_error(self, exc: click.ClickException) -> None:
        """Make click report ``exc`` as every other error: one line on stderr (its usage block would be four),
        after the --json error object. A group called without a command still prints its help."""
        if isinstance(exc, _NO_ARGS_IS_HELP):
            return
        message = " ".join(exc.format_message().split())
        self._json_error(exc.exit_code, "UsageError", message, {})
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            message += f" (see '{ctx.command_path} --help')"

        def show(file=None) -> None:
            click.echo(f"error: {message}", err=True)

        exc.show = show  # type: ignore[method-assign]

    def _json_error(self, code: int, cls: str, message: str, details: dict) -> None:
        if self.json_mode and not output.json_printed():
            error = {"class": cls, "message": message}
            output.print_json({"ok": False, "exit_code": code, "error": error, **details})


def _load(name: str) -> click.Command:
    module_name, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def _refused_subcommand(args: list[str], exc: click.ClickException) -> None:
    """The group refused its own arguments (e.g. ``wave-deploy --bogus build ...``): the subcommand never ran,
    so a command whose refusals fail closed (``build``: ``on_refused``) hears of it all the same. The group's
    options take no values, so the subcommand is the first argument that is not an option."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 1
    i += i < len(args) and args[i] == "--"
    if i >= len(args) or args[i] not in COMMANDS:
        return
    hook = getattr(_load(args[i]), "on_refused", None)
    if hook is not None:
        hook(args[i + 1 :], exc)


def leave_process_group() -> None:
    """Destroy the torch.distributed process group a command joined under torchrun, if any.

    A process that exits with a gloo group still alive can abort in the group's destructor
    ("terminate called without an active exception", SIGABRT), which torchrun reports as a failure
    even though the command itself succeeded. Reads sys.modules so that commands which never
    imported torch stay torch-free.
    """
    if "torch.distributed" in sys.modules:
        from wave_deploy.training.distributed import cleanup_distributed

        cleanup_distributed()


@click.group(cls=LazyGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="wave-deploy")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Pick, initialize (WAVE templates), train, fold and export the ViT that fits each device."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if debug:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = {"debug": debug, "quiet": quiet, "verbose": verbose}


def main() -> None:
    try:
        cli.main(prog_name="wave-deploy")
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001  (a bug: show the traceback, exit 1)
        traceback.print_exc()
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
