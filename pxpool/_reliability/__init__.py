"""Fault handling: the supervisor, task timeouts and retries, walltime drains,
idle release, and the per-engine limits (memory, result size)."""
