"""The pool's core: cluster, client, engine sets, state and the one engine path.

Everything a feature needs of a pool lives here, below the features; ``pool.py``
composes the features over it. Nothing here imports a feature package.
"""
