"""The client side of sending a function: cloudpickle, once per unchanged function.

cloudpickle serialises a notebook function by value, with the globals it uses, which
takes tens of microseconds: a good part of a small task's cost. A function submitted
again unchanged pickles to the same bytes, so they are kept, but only where "unchanged"
can be checked cheaply and surely: the same code, defaults and closure, and every
global it reads (``__main__`` ones included) the same object as before *and* one that
cannot change in place (*frozen*, :mod:`pxpool._tasks.names`). A function reading a
list, a dict, an array, another notebook function or class is pickled anew each time,
so a change to any of them always reaches the engines.
"""

from __future__ import annotations

import types
import weakref
from typing import Any

import cloudpickle

from .names import by_reference, frozen_inputs

_ABSENT = object()  # a name the function's module does not define (an engine name)
_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], bytes]] = weakref.WeakKeyDictionary()


def dumps_function(f: Any) -> bytes:
    """``cloudpickle.dumps(f)``, reusing the bytes of an unchanged function."""
    if not isinstance(f, types.FunctionType) or by_reference(f):
        return bytes(cloudpickle.dumps(f))  # cheap for functions of importable modules
    inputs = frozen_inputs(f, _ABSENT)
    if inputs is None:
        return bytes(cloudpickle.dumps(f))
    cached = _CACHE.get(f)
    if cached is not None and len(cached[0]) == len(inputs):
        if all(a is b for a, b in zip(cached[0], inputs, strict=True)):
            return cached[1]
    data: bytes = cloudpickle.dumps(f)
    _CACHE[f] = (inputs, data)
    return data
