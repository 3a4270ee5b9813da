"""The build's default training length scales with the data: epochs over the training split, explicit steps win."""

from __future__ import annotations

from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.data import load_builtin
from wave_deploy.options import BuildOptions


def test_the_default_epochs_give_the_earlier_60_and_150_steps_on_the_builtin_data():
    n_train = len(load_builtin(seed=0).train_x)
    assert n_train == 4500
    assert BuildOptions().phase_steps(n_train) == (60, 150)


def test_steps_scale_with_the_training_split_and_never_exceed_its_epochs():
    options = BuildOptions()
    sizes = [30, 300, 4500, 45_000]
    steps = [options.phase_steps(n) for n in sizes]
    assert steps == sorted(steps) and steps[0] == (1, 1) and steps[1] == (4, 10) and steps[-1] == (598, 1495)
    for n, (scaler, dense) in zip(sizes, steps):  # at most one step more than the epochs ask for
        assert (dense - 1) * options.batch_size < options.dense_epochs * n + options.batch_size


def test_explicit_steps_win_over_epochs():
    options = BuildOptions(scaler_steps=0, dense_steps=7, dense_epochs=100.0)
    assert options.phase_steps(4500) == (0, 7)
    assert options.training_fields(4500)["dense_steps"] == 7


def test_build_help_documents_the_epochs_and_refuses_a_non_positive_epoch_count():
    help_text = CliRunner().invoke(cli, ["build", "--help"]).output
    assert "--dense-epochs" in help_text and "--scaler-epochs" in help_text
    bad = CliRunner().invoke(cli, ["build", "--profile", "jetson", "--dense-epochs", "0"])
    assert bad.exit_code == 2 and "--dense-epochs" in bad.output
