"""A preloaded fork server per host: engines forked in milliseconds, pages shared.

Every engine imports IPython, ipykernel, ipyparallel, zmq and pxpool (~0.8 s of CPU)
before it serves; 64 engines on a 2-core machine spend most of their start doing the
same imports 64 times, and each holds its own copy of them. One server per host does
the imports once (plus the profile's ``preload``), starts no thread and no zmq context,
and forks each engine on request: the engine is a normal pxpool engine with its own
pid, session, output file, environment and working directory, and shares the
preloaded pages copy-on-write.

- :mod:`.server` is the server (``python -m pxpool._entry.forkserver.server``);
- :mod:`.wire` is the request protocol on the server's Unix socket, both sides;
- :mod:`.stand_in` runs in place of an engine where the caller needs a process of its
  own that lives as long as the engine (an ssh session, a batch job's step): it asks
  the host's server (starting one when none answers) and exits with the engine's code.

Standard library only at import time: the server imports the heavy modules by name,
after it started, so that an import failure is reported instead of crashing it.
"""

# What engines import as they start or with the pool's first hooks, by name (this
# package imports none of them): the server imports them once where they import; an
# engine imports whatever is missing itself.
WARM = (
    "pxpool._entry.nanny",
    "ipykernel.debugger",  # debugpy: ~0.3 s, imported by every kernel as it starts
    "IPython.core.completerlib",
    "tornado.queues",
    "pxpool._health.agent",
    "pxpool._tasks.agent",
    "pxpool._debug.agent",
    "pxpool._data.agent",
    "pxpool._logs.agent",
    "pxpool._reliability.limits",
    "pxpool._reliability.walltime",
    "pxpool._reliability.result_limit",
)
