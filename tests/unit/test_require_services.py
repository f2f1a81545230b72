"""PXPOOL_REQUIRE_SERVICES=1 (set by the README's test command) makes every skip a failure
that names the skip's reason; without it a skip stays a skip. Checked on a small pytest
run in a subprocess with the project's own conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPPING_TESTS = """
import pytest

pytestmark = pytest.mark.integration


def test_service_down():
    pytest.skip("the test sshd is not running")


@pytest.mark.skipif(True, reason="mpiexec not installed")
def test_needs_mpiexec():
    pass


@pytest.fixture
def queue():
    pytest.skip("sbatch not found")


def test_needs_a_queue(queue):
    pass


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False


def test_runs():
    pass
"""

SKIPPING_MODULE = """
import pytest

pytest.skip("/usr/bin/chromium is missing", allow_module_level=True)


def test_in_a_browser():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts real engines or services\n")
    pytester.makepyfile(test_services=SKIPPING_TESTS, test_browser=SKIPPING_MODULE)
    return pytester


def run(project: pytest.Pytester) -> pytest.RunResult:
    return project.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors", timeout=120
    )


def test_without_the_variable_a_skip_is_a_skip(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PXPOOL_REQUIRE_SERVICES", raising=False)
    result = run(project)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_under_the_variable_every_skip_fails_with_its_reason(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PXPOOL_REQUIRE_SERVICES", "1")
    result = run(project)
    # a skip in the test fails it; one in setup (skipif, a fixture) or collection is an error
    result.assert_outcomes(passed=1, failed=1, errors=3, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random(
        [
            "*a skip is a failure. Skipped: the test sshd is not running*",
            "*a skip is a failure. Skipped: mpiexec not installed*",
            "*a skip is a failure. Skipped: sbatch not found*",
            "*a skip is a failure. Skipped: /usr/bin/chromium is missing*",
            "FAILED test_services.py::test_service_down*",
            "ERROR test_services.py::test_needs_mpiexec*",
            "ERROR test_services.py::test_needs_a_queue*",
            "ERROR test_browser.py*",
            "XFAIL test_services.py::test_known_bug*",
        ]
    )
