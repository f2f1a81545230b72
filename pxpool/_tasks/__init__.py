"""The task lane: ``pool.submit`` futures, ``pool.executor()`` and the joblib backend,
over a direct channel from the client to each engine (no scheduler, no hub)."""
