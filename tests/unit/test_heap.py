"""Engines keep freed memory while busy and give it back once idle (glibc, and
Python's arenas of decoded strings)."""

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
heap.keep_arenas_of([str(i) for i in range(5000)])  # nor Python's arenas
print(rss_mb() - base < 20, not heap._kept)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_under_a_memory_limit_freed_memory_goes_back_at_once() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", GIVE_BACK], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split() == ["True", "True"], shown.stdout + shown.stderr


ARENAS = """
import resource, time
from pxpool._entry import heap

text = "\\x00".join(f"word-{i}" for i in range(300_000))

def split_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    values = text.split("\\x00")
    return values, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

values, _ = split_faults()
heap.keep_arenas_of(values)  # not keeping freed memory yet: holds nothing
del values
values, cold = split_faults()  # the arenas of the first split were unmapped
del values
heap.keep_freed_memory(idle_seconds=1.0)
values, _ = split_faults()
heap.keep_arenas_of(values)
del values
values, warm = split_faults()  # the same arenas, mapped and faulted in already
heap.keep_arenas_of(values)
del values
held = len(heap._kept)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and heap._kept:
    time.sleep(0.1)  # idle: the trimmer lets them go
print(cold > 2000, warm < cold / 4, held > 0, not heap._kept, cold, warm)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_arenas_of_decoded_strings_are_kept_while_busy_and_let_go_when_idle() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", ARENAS], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split()[:4] == ["True"] * 4, shown.stdout + shown.stderr
