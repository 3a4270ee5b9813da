"""``plan --objective accuracy`` scores on the data it is given (``--data``), as build does, and one score per
depth x width at the data's image size (a multi-resolution search scores each depth x width once)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.wave import score
from wave_deploy.wave.bank import TemplateBank, default_bank_path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """An ImageFolder of 40 built-in digits, classes 0-3, at 28 px: another task than the bank's."""
    from _tiny_mnist import digit_folder

    return digit_folder(tmp_path_factory.mktemp("digits"))


def test_plan_with_data_scores_the_accuracy_on_that_data(digits, monkeypatch):
    seen = []

    def scores(bank_path, specs, data, **kwargs):
        seen.append(data.info)
        return {score._key(s): s.depth * s.embed_dim / 1e6 for s in specs}

    monkeypatch.setattr(score, "score_sizes", scores)
    args = ["plan", "--profile", "x86-cpu", "--objective", "accuracy", "--data", str(digits)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert [(i.source, i.num_classes) for i in seen] == [(str(digits), 4)]
    resized = CliRunner().invoke(cli, [*args, "--img-size", "56,28"])
    assert resized.exit_code == 0, resized.output
    assert seen[-1].img_size == 28  # one image size: the smallest given


def test_a_multi_resolution_search_scores_each_depth_and_width_once_at_the_datas_size():
    from _tiny_mnist import builtin_data

    bank = TemplateBank.load(default_bank_path())
    small = bank.geometry.make_spec(1, min(bank.geometry.valid_embed_dims()))
    specs = [small, small.replace(img_size=2 * small.img_size)]
    scores = score.score_sizes(default_bank_path(), specs, builtin_data())  # the 56 px one: no crash
    assert list(scores) == [score._key(small)] and 0.0 <= scores[score._key(small)] <= 1.0
