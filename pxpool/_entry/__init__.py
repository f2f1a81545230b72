"""Process entry points: the engine, the controller and the nanny.

Nothing here imports pxpool outside this package. The nanny and its helpers
(``nanny``, ``pids``, ``net``) import the standard library and pyzmq only, so a
nanny serves before anything heavy loads; ``engine_main`` and ``controller_main``
run ipyparallel's own engine and controller.
"""
