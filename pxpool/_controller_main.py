"""Old entry path, kept for job scripts already waiting in a queue.

``python -m pxpool._controller_main`` runs :mod:`pxpool._entry.controller_main`.
"""

from pxpool._entry.controller_main import main

if __name__ == "__main__":
    main()
