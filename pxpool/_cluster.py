"""ipyparallel's Cluster with the one change pxpool needs from it.

``Cluster.write_cluster_file`` writes with the process umask (often 0644); the file
names every process of the pool, so pxpool writes it owner-only like the
connection files beside it.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import ipyparallel as ipp


class PxCluster(ipp.Cluster):
    def write_cluster_file(self) -> None:
        os.makedirs(os.path.dirname(self.cluster_file), mode=0o700, exist_ok=True)
        fd = os.open(self.cluster_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.to_dict(), handle)

    async def connect_client(self, **client_kwargs: Any) -> ipp.Client:
        """ipyparallel's ``connect_client``, with a Client whose send errors name the
        argument that cannot be pickled (see :mod:`pxpool._client`)."""
        from ._client import PxClient

        info = self.controller.get_connection_info()
        if inspect.isawaitable(info):
            info = await info
        return PxClient(
            info["client"],
            cluster=self,
            profile_dir=self.profile_dir,
            cluster_id=self.cluster_id,
            **client_kwargs,
        )
