"""Engine logs: ``pool.logs(engine_id)`` and ``%pxlogs``, for running and dead engines.

- :mod:`~pxpool._logs.agent` (engine side) keeps a copy of everything an engine's
  ``sys.stdout``/``sys.stderr`` receive (what its tasks and ``%%px`` cells print) in a
  bounded file that survives the engine's death;
- :mod:`~pxpool._logs.output` reads what the engine process itself wrote, as each
  provider's launcher keeps it;
- :mod:`~pxpool._logs.logs` is the pool's side: the engine hook, the death listener
  and ``pool.logs``.
"""

from __future__ import annotations

from .logs import EngineLogs

__all__ = ["EngineLogs"]
