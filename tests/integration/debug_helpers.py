"""Functions the debugging tests run on engines, shared by the local and the ssh ones."""

from __future__ import annotations


def fails_with_local(n: int) -> None:
    secret = n * 7
    raise ValueError(f"bad input {n} ({secret})")
