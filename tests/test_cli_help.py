"""``--help`` works for every command and subcommand, discovered from the click group (none is listed here)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from wave_deploy.cli.main import COMMANDS, cli


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group``, depth first: ("templates",), ("templates", "build"), ..."""
    ctx = click.Context(group)
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join(prefix + (name,))} is listed but cannot be loaded"
        paths.append(prefix + (name,))
        if isinstance(command, click.Group):
            paths += _command_paths(command, prefix + (name,))
    return paths


PATHS = _command_paths(cli)


def test_discovery_finds_every_top_level_command_and_the_subcommands_of_groups():
    assert {p[0] for p in PATHS} == set(COMMANDS)
    groups = {p[0] for p in PATHS if len(p) > 1}
    assert {"templates", "profiles"} <= groups  # the discovery descends into groups


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_help_exits_0_with_usage_and_the_commands_own_summary(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="wave-deploy")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: wave-deploy {' '.join(path)} ")
    assert "--help" in result.output
    ctx = click.Context(cli)
    command: click.Command = cli
    for name in path:
        command = command.get_command(ctx, name)  # type: ignore[union-attr]
    summary = command.get_short_help_str(limit=200)
    assert summary and summary.rstrip(".")[:40] in " ".join(result.output.split())
