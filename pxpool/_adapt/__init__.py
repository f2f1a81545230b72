"""Adaptive pools: ``pool.adapt(minimum, maximum, target_seconds=...)`` starts engines
(whole batch jobs) while tasks wait and stops those that stayed idle, without
oscillating; the decisions in :mod:`.policy`, what they look at in :mod:`.load`, and
the loop that carries them out in :mod:`.adaptive`."""
