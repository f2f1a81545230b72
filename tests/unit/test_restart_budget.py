"""The restart budget: failed replacements per window, the back-off, and which deaths
count (issue #18: defaults that survive random kills and still stop a crash loop)."""

from __future__ import annotations

import signal

import pytest

from pxpool._reliability.supervisor import JOIN_GRACE, MAX_BACKOFF, Death, RestartBudget
from pxpool.errors import ProfileValidationError
from pxpool.profile import load_profile

EXITED = Death((1,), "exited with code 3", 3, 0.0)
KILLED = Death((1,), "killed by SIGKILL", -signal.SIGKILL, 0.0)
OOM = Death((1,), "out of memory: the kernel's OOM killer ended it with SIGKILL", -9, 0.0)


def test_failures_count_for_the_window_only() -> None:
    budget = RestartBudget(limit=3, window=10.0, backoff=0.1)
    for now in (0.0, 1.0, 2.0):
        assert not budget.used_up(1, now)
        budget.failed(1, now)
    assert budget.used_up(1, 2.0)
    assert not budget.used_up(0, 2.0)  # per engine id
    assert budget.recent(1, 10.5) == 2  # the failure at 0 s left the window
    assert not budget.used_up(1, 10.5)


def test_each_failure_doubles_the_wait_up_to_a_cap_that_fits_the_window() -> None:
    budget = RestartBudget(limit=5, window=60.0, backoff=0.1)
    assert budget.longest_wait == 6.0  # window / (2 * limit)
    waits = []
    for now in range(7):
        waits.append(budget.delay(1))
        budget.failed(1, float(now))
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.0])
    budget.came_up(1, 10.0)
    assert budget.delay(1) == pytest.approx(0.1)
    assert budget.recent(1, 10.0) == 7  # coming up resets the wait, not the count


@pytest.mark.parametrize(
    ("limit", "window", "backoff"), [(5, 60.0, 0.1), (3, 10.0, 0.1), (20, 60.0, 1.0), (2, 600.0, 5)]
)
def test_the_waits_of_a_whole_budget_fit_in_its_window(
    limit: int, window: float, backoff: float
) -> None:
    """So a crash loop always uses the budget up: its failures cannot age out of the
    window faster than they come (only the engines' own start time adds to it)."""
    budget = RestartBudget(limit=limit, window=window, backoff=backoff)
    total = 0.0
    for now in range(limit):
        total += budget.delay(1)
        budget.failed(1, float(now))
    assert total <= window / 2 + backoff
    assert budget.longest_wait <= MAX_BACKOFF


def test_the_wait_is_never_shorter_than_restart_backoff() -> None:
    assert RestartBudget(limit=10, window=10.0, backoff=2.0).delay(1) == 2.0


def test_only_replacements_that_end_by_themselves_count() -> None:
    """A replacement SIGKILLed from outside was killed, not broken; an exit, a crash,
    an OOM kill or a start that failed otherwise (no death: a timeout) count."""
    budget = RestartBudget(limit=5, window=60.0, backoff=0.1)
    budget.ended(1, KILLED, 0.0)
    assert budget.recent(1, 0.0) == 0
    assert budget.delay(1) == pytest.approx(0.1)
    for death in (EXITED, OOM, None):
        budget.ended(1, death, 0.0)
    assert budget.recent(1, 0.0) == 3
    assert budget.delay(1) == pytest.approx(0.8)


def test_a_death_right_after_coming_up_is_the_replacement_failing() -> None:
    budget = RestartBudget(limit=5, window=1000.0, backoff=0.1)
    budget.came_up(1, 100.0)
    budget.died(1, EXITED, 100.0 + JOIN_GRACE / 2)
    assert budget.recent(1, 101.0) == 1
    budget.came_up(1, 200.0)
    budget.died(1, EXITED, 200.0 + 5.0)  # it ran: an engine that dies later never counts
    budget.came_up(1, 300.0)
    budget.died(1, KILLED, 300.0 + JOIN_GRACE / 2)
    assert budget.recent(1, 301.0) == 1


def test_a_restart_by_hand_gives_a_fresh_budget() -> None:
    budget = RestartBudget(limit=2, window=60.0, backoff=0.1)
    budget.failed(1, 0.0)
    budget.failed(1, 1.0)
    assert budget.used_up(1, 1.0)
    budget.forget(1)
    assert not budget.used_up(1, 1.0)
    assert budget.delay(1) == pytest.approx(0.1)


def test_max_restarts_zero_replaces_nothing() -> None:
    assert RestartBudget(limit=0, window=60.0, backoff=0.1).used_up(1, 0.0)


def test_restart_window_is_read_as_seconds_or_hh_mm_ss() -> None:
    assert load_profile("local", restart_window=90).restart_window == 90.0
    assert load_profile("local", restart_window="00:02:00").restart_window == 120.0
    with pytest.raises(
        ProfileValidationError, match=r"restart_window=: restart_window: must be >= 1 seconds"
    ):
        load_profile("local", restart_window=0)


def test_existing_restart_keys_keep_their_checks() -> None:
    with pytest.raises(ProfileValidationError, match=r"max_restarts: must be >= 0; got -1"):
        load_profile("local", max_restarts=-1)
    with pytest.raises(ProfileValidationError, match=r"restart_backoff: must be >= 0; got -1"):
        load_profile("local", restart_backoff=-1)
