"""Old entry path, kept for job scripts already waiting in a queue.

``python -m pxpool._engine_main`` runs :mod:`pxpool._entry.engine_main`.
"""

from pxpool._entry.engine_main import PxpoolEngine

if __name__ == "__main__":
    PxpoolEngine.launch_instance()
