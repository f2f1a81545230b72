"""Engines read the client's arrays straight from its memory (process_vm_readv): rows
come back exact, and a process that is not the client, or a range that is not mapped,
is refused by name, never read as data."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from pxpool._data import direct

pytestmark = pytest.mark.skipif(not direct.available(), reason="process_vm_readv is Linux only")

READER = """
import json, sys
import numpy as np
from pxpool._data import direct
ask = json.loads(sys.stdin.read())
out = {"reads": direct.reads(ask["pid"], ask["token_at"], bytes.fromhex(ask["token"]))}
remote = direct.Remote(tuple(ask["array"][:2]) + (tuple(ask["array"][2]), ask["array"][3]))
out["rows"] = remote[ask["start"] : ask["stop"]].tolist()
out["owns"] = bool(remote[0:1].flags.owndata and remote[0:1].flags.writeable)
try:
    direct.Remote((ask["pid"], 8, (4,), "<f8"))[0:4]
except OSError as error:
    out["refused"] = str(error)
print(json.dumps(out))
"""


def _read_in_another_process(ask: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", READER],
        input=json.dumps(ask),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def _ask(array: np.ndarray, start: int, stop: int, token: bytes | None = None) -> dict[str, Any]:
    pid, token_at, own_token = direct.marker()
    return {
        "pid": pid,
        "token_at": token_at,
        "token": (token or own_token).hex(),
        "array": list(direct.describe(array)),
        "start": start,
        "stop": stop,
    }


def test_another_process_reads_rows_of_this_processs_array_as_its_own_copy() -> None:
    array = np.arange(3000, dtype=np.float64).reshape(1000, 3)
    answer = _read_in_another_process(_ask(array, 10, 13))
    assert answer["reads"] is True
    assert answer["rows"] == array[10:13].tolist()
    assert answer["owns"] is True  # writable memory of the reader, not a view
    assert f"pid {direct.marker()[0]}" in answer["refused"]  # an unmapped range: named


def test_a_wrong_token_means_another_process_and_is_refused() -> None:
    """What an engine in another pid namespace sees: the same pid names another process,
    whose memory does not hold the client's token."""
    array = np.arange(10, dtype=np.int64)
    answer = _read_in_another_process(_ask(array, 0, 10, token=b"\x01" * 16))
    assert answer["reads"] is False
    assert answer["rows"] == list(range(10))  # the control: the memory itself is readable


def test_a_process_that_is_gone_is_not_read() -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    pid = int(gone.stdout)
    _, token_at, token = direct.marker()
    assert direct.reads(pid, token_at, token) is False
    assert direct.reads(*direct.marker()) is True  # control: this process reads itself


def test_rows_of_an_empty_range_read_nothing() -> None:
    array = np.arange(5, dtype=np.int32)
    remote = direct.Remote(direct.describe(array))
    assert remote[3:3].shape == (0,) and remote[4:99].tolist() == [4]
    with pytest.raises(IndexError, match="contiguous"):
        remote[0:4:2]
