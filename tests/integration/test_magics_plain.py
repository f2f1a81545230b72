"""%px beside a plain ipyparallel cluster, through a real IPython shell: with no pxpool
pool current it runs on the user's own ipyparallel client, a pxpool pool started later
takes over, and stopping that pool hands %px back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import pxpool

pytestmark = pytest.mark.integration

# As a user writes it; delay=0 and a faster heartbeat only shorten the start (~2 s).
PLAIN_CLUSTER = """
import ipyparallel as ipp
cluster = ipp.Cluster(n=2, delay=0, controller_args=["--HeartMonitor.period=500"])
cluster.start_cluster_sync()
rc = cluster.connect_client_sync()
rc.wait_for_engines(2, timeout=60)
"""


def run(shell: InteractiveShell, cell: str) -> str:
    """Run ``cell`` as a notebook cell; its stdout. A failing cell fails the test."""
    with capture_output() as captured:
        result = shell.run_cell(cell)
    result.raise_error()
    return captured.stdout


@pytest.fixture(scope="module")
def plain(shell: InteractiveShell) -> Iterator[Any]:
    """A plain ipyparallel cluster made in the shell after ``%load_ext pxpool``."""
    with pytest.raises(pxpool.PoolStateError):
        pxpool.current()  # no pxpool pool: %px has only the plain client to go to
    run(shell, PLAIN_CLUSTER)
    try:
        yield shell.user_ns["rc"]
    finally:
        run(shell, "rc.close()\ncluster.stop_cluster_sync()\ndel rc, cluster")


def test_px_runs_on_a_plain_ipyparallel_client_when_no_pool_is_current(
    shell: InteractiveShell, plain: Any
) -> None:
    run(shell, "%%px\nfoo = 5")
    assert plain[:]["foo"] == [5, 5]
    out = run(shell, "%px print('plain', foo)")
    assert out.count("plain 5") == 2
    run(shell, "%pxresult -o last")  # ipyparallel's own %pxresult, on the same client
    assert sorted(shell.user_ns["last"].engine_id) == plain.ids


def test_a_pool_started_later_takes_over_and_stopping_it_hands_back(
    shell: InteractiveShell, plain: Any
) -> None:
    run(shell, "%pool start local -n 1")
    try:
        pool = pxpool.current()
        run(shell, "%%px\nfoo = 7")
        assert pool.pull("foo") == [7]  # on the pool's engine ...
        assert plain[:]["foo"] == [5, 5]  # ... not on the plain client's
        # stopped as JupyterLab's sidebar stops it: by name, not through this Pool
        pxpool.Pool.stop_by_name(pool.name)
        assert pxpool.current() is pool  # still current here, but its record is gone
        run(shell, "%%px\nfoo = 9")  # handed back
        assert plain[:]["foo"] == [9, 9]
    finally:
        run(shell, "%pool stop")
    run(shell, "%%px\nfoo = 11")  # %pool stop hands back too
    assert plain[:]["foo"] == [11, 11]


def test_clients_are_noted_as_they_are_made_not_scanned_for_each_time(
    shell: InteractiveShell, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is scanned once, for clients made before pxpool was loaded; a
    client made later is noted as it is made and is the newest at once."""
    import gc

    run(shell, "%px x = 1")  # the one scan, if no %px ran before in this shell
    scans: list[int] = []
    real = gc.get_objects
    monkeypatch.setattr(gc, "get_objects", lambda *a, **k: scans.append(1) or real(*a, **k))
    for _ in range(3):
        run(shell, "%px x = 1")
    run(shell, "rc2 = cluster.connect_client_sync()\nrc2.wait_for_engines(2, timeout=60)")
    try:
        asked = len(plain.history)
        run(shell, "%%px\nfoo = 13")
        assert shell.user_ns["rc2"].history and len(plain.history) == asked  # the newest
        assert scans == []
    finally:
        run(shell, "rc2.close()\ndel rc2")
