"""The leaked-process check itself: a test that leaves a pool running must fail."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_a_test_that_leaves_engines_running_fails_and_they_are_killed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        test_leaky="""
        import pxpool

        def test_forgets_to_stop():
            pxpool.Pool.from_profile("local", engines=1).start_sync()

        def test_stops_properly():
            with pxpool.Pool.from_profile("local", engines=1) as pool:
                assert pool.ids == [0]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*test left * pool process(es) running (killed now)*", "*pxpool._entry.controller_main*"]
    )
