"""Which names a lane task's function sees, on the engine; and telling functions whose
pickle cannot change from the others (both sides).

A function cloudpickled by value (from ``__main__``, a notebook) arrives with the client's
globals it reads (the notebook's imports, helpers and constants). Before it runs, every
name it reads that the engine defines (pushed, scattered, set by ``%%px``) replaces the
client's value: **the engine wins**, as ``pool.apply`` only ever sees the engine's names;
names the engine lacks keep the client's value. The globals are the task's own: an
assignment to a global inside the task does not outlive it (set engine names with
``pool.push`` or ``%%px``). Functions of importable modules keep their module's globals.

A function whose every input is *frozen* (code, defaults, closure and the globals it
reads are modules, builtins, functions or classes of importable modules, numbers,
strings, bytes, None, or tuples of such) pickles to the same bytes for as long as those
inputs are the same objects: the client pickles it once (:mod:`pxpool._tasks.pickling`)
and the engine unpickles it once, giving each task a fresh copy of its globals.

Standard library only: the engine side (the lane's agent) imports it.
"""

from __future__ import annotations

import functools
import pickle
import sys
import types
from collections import OrderedDict
from typing import Any

FROZEN_TYPES = (
    int,
    float,
    complex,
    str,
    bytes,
    bool,
    type(None),
    range,
    types.ModuleType,
    types.BuiltinFunctionType,
)
KEPT_FUNCTIONS = 64  # unpickled frozen functions an engine keeps, by their pickle
_KEPT: OrderedDict[bytes, tuple[types.FunctionType, frozenset[str]]] = OrderedDict()


def code_names(code: types.CodeType) -> set[str]:
    """The global names ``code`` and the code nested in it may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def by_reference(value: Any) -> bool:
    """True for a function or class that pickles as a reference to its module."""
    module = sys.modules.get(getattr(value, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return False
    return getattr(module, getattr(value, "__name__", ""), None) is value


def frozen(value: Any) -> bool:
    """True if ``value`` cannot change in place (see the module docstring)."""
    if isinstance(value, FROZEN_TYPES):
        return True
    if isinstance(value, tuple | frozenset):
        return all(frozen(item) for item in value)
    if isinstance(value, types.FunctionType | type):
        return by_reference(value)
    return False


@functools.lru_cache(maxsize=512)
def _sorted_names(code: types.CodeType) -> tuple[str, ...]:
    return tuple(sorted(code_names(code)))


def frozen_inputs(f: types.FunctionType, absent: Any) -> tuple[Any, ...] | None:
    """The objects the pickle of ``f`` depends on, or None unless all are frozen
    (``absent`` stands for a name its globals lack: an engine name or a builtin)."""
    if f.__dict__ or f.__kwdefaults__ or not frozen(f.__defaults__ or ()):
        return None
    cells = tuple(cell.cell_contents for cell in f.__closure__ or ())
    if not frozen(cells):
        return None
    scope = f.__globals__
    used = tuple(scope.get(name, absent) for name in _sorted_names(f.__code__))
    if not all(value is absent or frozen(value) for value in used):
        return None
    return (f.__code__, f.__defaults__, *cells, *used)


def _functions(f: Any) -> list[types.FunctionType]:
    if isinstance(f, types.FunctionType):
        return [f]
    if isinstance(f, functools.partial):
        return _functions(f.func) + [a for a in f.args if isinstance(a, types.FunctionType)]
    return []


def merge_engine_names(f: Any, namespace: dict[str, Any]) -> None:
    """Let the engine's names win in the globals of ``f`` (see the module docstring).

    Functions pickled by value come with a fresh globals dict shared by the functions
    of one message; functions of importable modules are left alone."""
    for function in _functions(f):
        scope = function.__globals__
        module = sys.modules.get(function.__module__)
        if scope is namespace or (module is not None and scope is vars(module)):
            continue
        names = code_names(function.__code__)
        for value in list(scope.values()):
            if isinstance(value, types.FunctionType) and value.__globals__ is scope:
                names |= code_names(value.__code__)
        for name in names:
            if name in namespace:
                scope[name] = namespace[name]


def load_function(data: Any, namespace: dict[str, Any]) -> Any:
    """On an engine: the task's function from its pickle, with the engine's names
    merged in; a frozen function is unpickled once and copied for each task."""
    key = bytes(data)
    kept = _KEPT.get(key)
    if kept is None:
        f = pickle.loads(key)
        if (
            not isinstance(f, types.FunctionType)
            or by_reference(f)
            or frozen_inputs(f, _KEPT) is None
        ):
            merge_engine_names(f, namespace)
            return f
        kept = _KEPT[key] = (f, frozenset(code_names(f.__code__)))
        if len(_KEPT) > KEPT_FUNCTIONS:
            _KEPT.popitem(last=False)
    template, names = kept
    scope = dict(template.__globals__)
    for name in names & namespace.keys():
        scope[name] = namespace[name]
    copy = types.FunctionType(
        template.__code__, scope, template.__name__, template.__defaults__, template.__closure__
    )
    copy.__qualname__ = template.__qualname__
    return copy
