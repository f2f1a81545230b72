"""How messages name a function: the client's send errors and ``pool.map``'s errors.

In the core rather than beside the map because the core's client names functions too
(:func:`pxpool._core.client.send_error`), and the core imports no feature package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["function_name"]


def function_name(f: Any) -> str:
    """``f``'s qualified name (``Model.fit``, ``<lambda>``), or its repr if it has none."""
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None)
    return name if name else repr(f)
