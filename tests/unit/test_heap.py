"""Engines keep freed memory while busy and give it back once idle (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import time, numpy as np
from pxpool._entry import heap

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

print(heap.keep_freed_memory(idle_seconds=1.0))
base = rss_mb()
for _ in range(3):  # busy: 64 MB allocated and freed, reusing the same pages
    blocks = [np.ones(1 << 20) for _ in range(8)]  # 8 MB each
    del blocks
kept = rss_mb() - base
deadline = time.monotonic() + 20
while time.monotonic() < deadline and rss_mb() - base > 20:
    time.sleep(0.1)  # idle: the trimmer gives the free heap back
print(kept > 40, rss_mb() - base < 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_freed_memory_is_kept_while_busy_and_returned_when_idle() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split() == ["True", "True", "True"], shown.stdout + shown.stderr


GIVE_BACK = """
import numpy as np
from pxpool._entry import heap

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

heap.keep_freed_memory(idle_seconds=3600)  # the trimmer would not run in this test
heap.give_back_freed_memory()  # a memory limit applies
base = rss_mb()
blocks = [np.ones(1 << 20) for _ in range(8)]
del blocks
print(rss_mb() - base < 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_under_a_memory_limit_freed_memory_goes_back_at_once() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", GIVE_BACK], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split() == ["True"], shown.stdout + shown.stderr
