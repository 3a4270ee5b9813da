"""A latency-budget sweep shared by the selection tests: loosest budget first, every choice fits its budget
and never has more FLOPs than the choice under a looser budget."""

from __future__ import annotations

from wave_deploy.errors import NoFeasibleModelError


def monotone_choices(select_at, latencies: list[float], points: int) -> list:
    """The chosen candidates of ``select_at(budget)`` (a Selection) over about ``points`` budgets spread over the
    sorted candidate ``latencies``, plus one below the fastest and one above the slowest; asserts the
    monotonicity on the way. Only a budget below every candidate may be infeasible."""
    budgets = sorted(
        {latencies[0] * 0.9, *latencies[:: max(1, len(latencies) // points)], latencies[-1] * 1.1},
        reverse=True,
    )
    chosen_list: list = []
    for budget in budgets:  # loosest first
        try:
            chosen = select_at(budget).chosen
        except NoFeasibleModelError:
            assert budget < latencies[0]
            continue
        assert chosen.latency_at_budget_ms <= budget
        if chosen_list:
            assert chosen.flops <= chosen_list[-1].flops
        chosen_list.append(chosen)
    return chosen_list
